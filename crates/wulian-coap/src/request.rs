//! What a request asks for (docs/coap.md): the resource from Uri-Path, the device token from
//! Uri-Query `t`, and the options that change how it is answered. Pure: no I/O, so every
//! refusal is unit-tested. The token is never part of an error message.

use coap_lite::{CoapOption, MessageClass, Packet, RequestType, ResponseType};

use crate::wire::{FORMAT_JSON, Reply, read_uint};

/// The resources, under `devices/{id}/` like the MQTT topics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    /// `POST devices/{id}/telemetry`
    Telemetry,
    /// `GET devices/{id}/commands`
    Commands,
    /// `POST devices/{id}/commands/{command_id}/response`
    CommandResponse { command_id: String },
    /// `GET devices/{id}/twin`: the whole twin.
    Twin,
    /// `GET devices/{id}/twin/delta`: what the device still has to do.
    TwinDelta,
    /// `POST devices/{id}/twin/reported`: a JSON merge patch of the reported document.
    TwinReported,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub device_id: String,
    pub resource: Resource,
    /// The device token (`?t=`), when given.
    pub token: Option<String>,
    /// The request's Content-Format (None: not given).
    pub content_format: Option<u16>,
    /// The largest response payload the client takes (its Block2 size, else ours).
    pub response_budget: usize,
}

/// Options we act on; an unknown critical (odd-numbered) option is refused (§5.4.1).
/// Uri-Host and Uri-Port name this endpoint and need nothing more.
const UNDERSTOOD_CRITICAL: [u16; 7] = [3, 7, 11, 15, 17, 23, 27];

/// Reads a request, or the error response it gets.
pub fn parse(
    packet: &Packet,
    max_request_payload: usize,
    max_response_payload: usize,
) -> Result<Request, Reply> {
    for (&number, _) in packet.options() {
        match CoapOption::from(number) {
            CoapOption::ProxyUri | CoapOption::ProxyScheme => {
                return Err(Reply::error(
                    ResponseType::ProxyingNotSupported,
                    "this endpoint is not a proxy",
                ));
            }
            _ if number % 2 == 1 && !UNDERSTOOD_CRITICAL.contains(&number) => {
                return Err(Reply::error(
                    ResponseType::BadOption,
                    format!("unsupported critical option {number}"),
                ));
            }
            _ => {}
        }
    }
    let mut segments = Vec::new();
    for raw in packet.get_option(CoapOption::UriPath).into_iter().flatten() {
        let Ok(segment) = std::str::from_utf8(raw) else {
            return Err(Reply::error(
                ResponseType::BadRequest,
                "Uri-Path is not UTF-8",
            ));
        };
        segments.push(segment);
    }
    let method = match packet.header.code {
        MessageClass::Request(method) => Some(method),
        _ => None,
    };
    let (device_id, resource, allowed) = route(&segments)?;
    if method != Some(allowed) {
        let name = match allowed {
            RequestType::Get => "GET",
            _ => "POST",
        };
        return Err(Reply::error(
            ResponseType::MethodNotAllowed,
            format!("this resource takes {name}"),
        ));
    }
    let token = query_token(packet)?;
    if let Some(accept) = packet.get_first_option(CoapOption::Accept)
        && read_uint(accept, 2) != Some(u32::from(FORMAT_JSON))
    {
        return Err(Reply::error(
            ResponseType::NotAcceptable,
            "responses are application/json (Accept 50)",
        ));
    }
    let content_format = match packet.get_first_option(CoapOption::ContentFormat) {
        None => None,
        Some(raw) => match read_uint(raw, 2) {
            // Two bytes at most, so the value fits.
            Some(value) => u16::try_from(value).ok(),
            None => {
                return Err(Reply::error(
                    ResponseType::BadRequest,
                    "invalid Content-Format option",
                ));
            }
        },
    };
    if let Some(raw) = packet.get_first_option(CoapOption::Block1) {
        let Some(block) = read_block(raw) else {
            return Err(Reply::error(
                ResponseType::BadRequest,
                "invalid Block1 option",
            ));
        };
        // A body in one block is just a body; a body in several is more than we take.
        if block.num != 0 || block.more {
            return Err(too_large(max_request_payload));
        }
    }
    let mut response_budget = max_response_payload;
    if let Some(raw) = packet.get_first_option(CoapOption::Block2) {
        let Some(block) = read_block(raw) else {
            return Err(Reply::error(
                ResponseType::BadRequest,
                "invalid Block2 option",
            ));
        };
        if block.num != 0 {
            return Err(Reply::error(
                ResponseType::BadRequest,
                "responses are a single block; Block2 beyond block 0 does not exist",
            ));
        }
        response_budget = response_budget.min(block.size);
    }
    Ok(Request {
        device_id: device_id.to_string(),
        resource,
        token,
        content_format,
        response_budget,
    })
}

/// 4.13 with Size1, the largest request body accepted (RFC 7959 §4).
pub fn too_large(max_request_payload: usize) -> Reply {
    Reply::error(
        ResponseType::RequestEntityTooLarge,
        format!("request larger than {max_request_payload} bytes"),
    )
    .with_size1(u32::try_from(max_request_payload).unwrap_or(u32::MAX))
}

fn route<'a>(segments: &[&'a str]) -> Result<(&'a str, Resource, RequestType), Reply> {
    match segments {
        ["devices", id, "telemetry"] => Ok((id, Resource::Telemetry, RequestType::Post)),
        ["devices", id, "commands"] => Ok((id, Resource::Commands, RequestType::Get)),
        ["devices", id, "twin"] => Ok((id, Resource::Twin, RequestType::Get)),
        ["devices", id, "twin", "delta"] => Ok((id, Resource::TwinDelta, RequestType::Get)),
        ["devices", id, "twin", "reported"] => Ok((id, Resource::TwinReported, RequestType::Post)),
        ["devices", id, "commands", command_id, "response"] => Ok((
            id,
            Resource::CommandResponse {
                command_id: (*command_id).to_string(),
            },
            RequestType::Post,
        )),
        _ => Err(Reply::error(
            ResponseType::NotFound,
            "no such resource (devices/{id}/telemetry, devices/{id}/commands, devices/{id}/commands/{command_id}/response, devices/{id}/twin, devices/{id}/twin/delta, devices/{id}/twin/reported)",
        )),
    }
}

/// `t=<device token>` from Uri-Query; any other parameter is refused so a typo is not
/// mistaken for a missing token.
fn query_token(packet: &Packet) -> Result<Option<String>, Reply> {
    let mut token = None;
    for raw in packet
        .get_option(CoapOption::UriQuery)
        .into_iter()
        .flatten()
    {
        let Ok(param) = std::str::from_utf8(raw) else {
            return Err(Reply::error(
                ResponseType::BadRequest,
                "Uri-Query is not UTF-8",
            ));
        };
        match param.split_once('=') {
            Some(("t", value)) if token.is_none() => token = Some(value.to_string()),
            Some(("t", _)) => {
                return Err(Reply::error(ResponseType::BadRequest, "t= given twice"));
            }
            _ => {
                let name = param.split_once('=').map_or(param, |(name, _)| name);
                return Err(Reply::error(
                    ResponseType::BadRequest,
                    format!("unknown query parameter {name:?} (only t=<device token>)"),
                ));
            }
        }
    }
    Ok(token)
}

struct Block {
    num: u32,
    more: bool,
    size: usize,
}

/// A Block1/Block2 value (RFC 7959 §2.2): NUM, M, SZX in at most three bytes.
fn read_block(raw: &[u8]) -> Option<Block> {
    let value = read_uint(raw, 3)?;
    let szx = value & 0x7;
    // SZX 7 is reserved (BERT, over TCP only).
    if szx == 7 {
        return None;
    }
    Some(Block {
        num: value >> 4,
        more: value & 0x8 != 0,
        size: 1 << (szx + 4),
    })
}

#[cfg(test)]
mod tests;
