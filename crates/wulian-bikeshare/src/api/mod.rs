//! The bike share's REST API, served beside the platform's by the same binary:
//!
//! - `/api/v1/bikeshare/…` for the operator (API keys, the platform's scopes),
//! - `/api/v1/rider/…` for the rider app (rider tokens),
//! - `/gbfs/v3/{tenant}/…` public GBFS 3.0 feeds, and `/mds/{tenant}/…` MDS 2.0 for the city
//!   (city credentials).
//!
//! Every error is a problem+json document with a stable code, as everywhere in wulian.
//!
//! Every handler carries its `#[utoipa::path]`; [`BikeShareApi`] lists them, and [`router`]
//! registers it with the platform's OpenAPI document (`GET /api/v1/openapi.json`).

mod basemap;
mod city;
mod openapi;
mod operator;
mod rider;

use std::sync::Arc;

use axum::Router;
use axum::extract::FromRef;
use axum::http::StatusCode;
use utoipa::OpenApi;
use wulian_api::{ApiError, AppState};

pub use basemap::MapTiles;
pub use openapi::BikeShareApi;

use crate::error::Error;
use crate::service::BikeShare;

#[derive(Clone)]
pub struct BikeApi {
    pub app: AppState,
    pub bikes: Arc<BikeShare>,
}

impl FromRef<BikeApi> for AppState {
    fn from_ref(api: &BikeApi) -> AppState {
        api.app.clone()
    }
}

/// The bike share's routes with their state applied, to merge into the platform's router
/// (`wulian_api::router_with`). Registers [`BikeShareApi`] with the platform's OpenAPI document,
/// so the document lists these routes wherever they are served.
pub fn router(app: AppState, bikes: Arc<BikeShare>) -> Router {
    register_openapi();
    Router::new()
        .merge(operator::routes())
        .merge(rider::routes())
        .merge(city::routes())
        .merge(basemap::routes())
        .with_state(BikeApi { app, bikes })
}

/// Adds [`BikeShareApi`] to the document `GET /api/v1/openapi.json` serves
/// (`wulian_api::openapi::register`); [`router`] does it, and registering again is harmless.
pub fn register_openapi() {
    wulian_api::openapi::register("bikeshare", BikeShareApi::openapi());
}

pub(crate) fn api_error(e: Error) -> ApiError {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status.is_server_error() {
        return ApiError::internal("Bike share request failed.", &e);
    }
    ApiError::new(status, e.code(), e.to_string())
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;

trait OrApi<T> {
    fn api(self) -> ApiResult<T>;
}

impl<T> OrApi<T> for crate::Result<T> {
    fn api(self) -> ApiResult<T> {
        self.map_err(api_error)
    }
}
