use coap_lite::{CoapOption, MessageClass, Packet, RequestType, ResponseType};

use super::*;
use crate::wire::uint_option;

fn packet(method: RequestType, path: &str, query: &[&str]) -> Packet {
    let mut p = Packet::new();
    p.header.code = MessageClass::Request(method);
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        p.add_option(CoapOption::UriPath, segment.as_bytes().to_vec());
    }
    for q in query {
        p.add_option(CoapOption::UriQuery, q.as_bytes().to_vec());
    }
    p
}

fn code(result: Result<Request, Reply>) -> ResponseType {
    result.expect_err("refused").code
}

#[test]
fn resources_and_methods() {
    let r = parse(
        &packet(RequestType::Post, "devices/bike-1/telemetry", &["t=wld_x"]),
        1000,
        1000,
    )
    .unwrap();
    assert_eq!(r.device_id, "bike-1");
    assert_eq!(r.resource, Resource::Telemetry);
    assert_eq!(r.token.as_deref(), Some("wld_x"));
    assert_eq!(r.response_budget, 1000);

    let r = parse(
        &packet(RequestType::Get, "devices/bike-1/commands", &[]),
        1000,
        1000,
    )
    .unwrap();
    assert_eq!(r.resource, Resource::Commands);
    assert_eq!(r.token, None);

    let r = parse(
        &packet(
            RequestType::Post,
            "devices/b/commands/c-12/response",
            &["t=x"],
        ),
        1000,
        1000,
    )
    .unwrap();
    assert_eq!(
        r.resource,
        Resource::CommandResponse {
            command_id: "c-12".into()
        }
    );

    assert_eq!(
        code(parse(
            &packet(RequestType::Get, "devices/b/telemetry", &[]),
            1000,
            1000
        )),
        ResponseType::MethodNotAllowed
    );
    assert_eq!(
        code(parse(
            &packet(RequestType::Put, "devices/b/commands", &[]),
            1000,
            1000
        )),
        ResponseType::MethodNotAllowed
    );
    assert_eq!(
        code(parse(
            &packet(RequestType::Post, "devices/b/attributes", &[]),
            1000,
            1000
        )),
        ResponseType::NotFound
    );
    assert_eq!(
        code(parse(&packet(RequestType::Get, "", &[]), 1000, 1000)),
        ResponseType::NotFound
    );
    // An unknown method code (0.31) is a request this resource does not take.
    let mut unknown = packet(RequestType::Post, "devices/b/telemetry", &[]);
    unknown.header.code = MessageClass::Reserved(0x1F);
    assert_eq!(
        code(parse(&unknown, 1000, 1000)),
        ResponseType::MethodNotAllowed
    );
}

#[test]
fn query_parameters_are_strict_and_never_echo_the_token() {
    let e = parse(
        &packet(
            RequestType::Post,
            "devices/b/telemetry",
            &["token=wld_secret"],
        ),
        1000,
        1000,
    )
    .unwrap_err();
    assert_eq!(e.code, ResponseType::BadRequest);
    let text = String::from_utf8(e.payload).unwrap();
    assert!(
        text.contains("\"token\"") && !text.contains("wld_secret"),
        "{text}"
    );
    assert_eq!(
        code(parse(
            &packet(RequestType::Post, "devices/b/telemetry", &["t=a", "t=b"]),
            1000,
            1000
        )),
        ResponseType::BadRequest
    );
    let mut bad = packet(RequestType::Post, "devices/b/telemetry", &[]);
    bad.add_option(CoapOption::UriQuery, vec![0xFF]);
    assert_eq!(code(parse(&bad, 1000, 1000)), ResponseType::BadRequest);
    let mut bad = packet(RequestType::Post, "devices", &[]);
    bad.add_option(CoapOption::UriPath, vec![0xC3]);
    assert_eq!(code(parse(&bad, 1000, 1000)), ResponseType::BadRequest);
}

#[test]
fn options() {
    let base = || packet(RequestType::Post, "devices/b/telemetry", &["t=x"]);

    let mut p = base();
    p.add_option(CoapOption::IfMatch, vec![1]);
    assert_eq!(code(parse(&p, 1000, 1000)), ResponseType::BadOption);
    let mut p = base();
    p.add_option(CoapOption::Unknown(2049), vec![1]);
    assert_eq!(code(parse(&p, 1000, 1000)), ResponseType::BadOption);
    // Unknown elective options are ignored.
    let mut p = base();
    p.add_option(CoapOption::Unknown(2048), vec![1]);
    assert!(parse(&p, 1000, 1000).is_ok());
    let mut p = base();
    p.add_option(CoapOption::ProxyUri, b"coap://elsewhere/".to_vec());
    assert_eq!(
        code(parse(&p, 1000, 1000)),
        ResponseType::ProxyingNotSupported
    );

    let mut p = base();
    p.add_option(CoapOption::Accept, uint_option(60));
    assert_eq!(code(parse(&p, 1000, 1000)), ResponseType::NotAcceptable);
    let mut p = base();
    p.add_option(CoapOption::Accept, uint_option(50));
    p.add_option(CoapOption::ContentFormat, uint_option(60));
    assert_eq!(parse(&p, 1000, 1000).unwrap().content_format, Some(60));

    // Block2 NUM 0 SZX 2 (64 bytes) caps the response; NUM 1 does not exist here.
    let mut p = base();
    p.add_option(CoapOption::Block2, uint_option(2));
    assert_eq!(parse(&p, 1000, 1000).unwrap().response_budget, 64);
    let mut p = base();
    p.add_option(CoapOption::Block2, uint_option((1 << 4) | 2));
    assert_eq!(code(parse(&p, 1000, 1000)), ResponseType::BadRequest);

    // Block1: a single block is fine, a body in several blocks is too large.
    let mut p = base();
    p.add_option(CoapOption::Block1, uint_option(6));
    assert!(parse(&p, 1000, 1000).is_ok());
    let mut p = base();
    p.add_option(CoapOption::Block1, uint_option(0x8 | 6));
    let e = parse(&p, 900, 1000).unwrap_err();
    assert_eq!(e.code, ResponseType::RequestEntityTooLarge);
    assert_eq!(e.size1, Some(900));
}

/// Random datagrams, and mutations of a valid request, through the message layer and the
/// request parser: every one is classified or refused, none panics.
#[test]
fn arbitrary_datagrams_never_panic() {
    let mut valid = packet(RequestType::Post, "devices/bike-1/telemetry", &["t=wld_x"]);
    valid.header.set_version(1);
    valid.payload = br#"{"temp": 1}"#.to_vec();
    let valid = valid.to_bytes_unlimited().unwrap();
    // xorshift: deterministic, so a failure reproduces.
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..20_000 {
        let datagram: Vec<u8> = if round % 2 == 0 {
            let len = (next() % 64) as usize;
            (0..len).map(|_| next() as u8).collect()
        } else {
            let mut d = valid.clone();
            for _ in 0..(next() % 4 + 1) {
                let at = (next() as usize) % d.len();
                d[at] = next() as u8;
            }
            d.truncate((next() as usize) % (d.len() + 1));
            d
        };
        if let crate::wire::Inbound::Request(p) = crate::wire::classify(&datagram) {
            let _result = parse(&p, 1152, 1120);
        }
    }
}
