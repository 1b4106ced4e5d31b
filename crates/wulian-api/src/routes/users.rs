//! `/api/v1/users`: the people of a tenant (operator accounts for the web console).
//!
//! Admins manage their tenant's users: an admin API key, or a user with the admin role; the
//! installation admin may act on any tenant's by naming it (`"tenant"` / `?tenant=`), which is
//! how a tenant gets its first user — there are no default accounts or passwords. A password is
//! the admin's choice or, when left out, generated and returned once. People change their own
//! password with `POST /api/v1/session/password`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use wulian_common::blocking::run_blocking;
use wulian_registry::{Role, User, UserPatch};

use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{ApiJson, ApiQuery, Caller};
use crate::routes::session::{audit, hash_permit};
use crate::routes::tenants::TenantParam;
use crate::state::AppState;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UserView {
    pub tenant: String,
    pub username: String,
    /// admin, operator, viewer or city_regulator.
    pub role: String,
    pub disabled: bool,
    pub created_at: i64,
    pub updated_at: i64,
    pub password_changed_at: i64,
    pub last_login_at: Option<i64>,
    /// A generated password: present only in the response that generated it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

impl UserView {
    fn new(user: User, password: Option<String>) -> UserView {
        UserView {
            tenant: user.tenant,
            username: user.username,
            role: user.role.to_string(),
            disabled: user.disabled,
            created_at: user.created_at,
            updated_at: user.updated_at,
            password_changed_at: user.password_changed_at,
            last_login_at: user.last_login_at,
            password,
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// 1 to 64 of `a-z 0-9 . _ @ -`, starting with a letter or digit.
    pub username: String,
    /// admin, operator, viewer or city_regulator.
    pub role: String,
    /// At least 10 characters, not the user name, not a common password. Generated (and
    /// returned once) when absent.
    pub password: Option<String>,
    /// Another tenant (installation admin only); the caller's tenant when absent.
    pub tenant: Option<String>,
}

/// Fields left out stay as they are.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    /// admin, operator, viewer or city_regulator; applies to the user's sessions at once.
    pub role: Option<String>,
    /// `true` refuses the user's logins and ends their sessions.
    pub disabled: Option<bool>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetPassword {
    /// The new password; generated (and returned once) when absent.
    pub password: Option<String>,
}

/// Registry errors of user calls, with the user-specific codes.
pub(crate) fn user_error(error: wulian_registry::Error) -> ApiError {
    use wulian_registry::Error as E;
    match error {
        E::NotFound { kind: "user", id } => {
            ApiError::not_found("user_not_found", format!("user {id:?} not found"))
        }
        E::Invalid {
            field: "password",
            reason,
        } => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "weak_password",
            format!("password: {reason}"),
        ),
        other => other.into(),
    }
}

fn parse_role(role: &str) -> ApiResult<Role> {
    role.parse().map_err(|_| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "role: must be admin, operator, viewer or city_regulator",
        )
    })
}

/// The tenant an admin call acts on: the caller's own, or (installation admin only) another.
fn target_tenant(caller: &Caller, requested: Option<String>) -> ApiResult<String> {
    caller.require_admin()?;
    match requested {
        Some(t) if t != caller.tenant() => {
            caller.require_installation_admin()?;
            Ok(t)
        }
        _ => Ok(caller.tenant().to_string()),
    }
}

/// Refuses what would lock a logged-in admin out of their own account.
fn not_oneself(caller: &Caller, tenant: &str, username: &str, what: &str) -> ApiResult<()> {
    let oneself = caller
        .session
        .as_ref()
        .is_some_and(|s| s.tenant == tenant && s.username == username);
    if oneself {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("you cannot {what} the account you are logged in with; ask another admin"),
        ));
    }
    Ok(())
}

#[utoipa::path(post, path = "/api/v1/users", tag = "users", request_body = CreateUser,
    security(("api_key" = []), ("session_cookie" = [])),
    responses((status = 201, body = UserView, description = "Created; a generated `password` is shown only here"),
        (status = 403, body = Problem), (status = 409, body = Problem, description = "`already_exists`"),
        (status = 422, body = Problem, description = "`weak_password`, `invalid_field`")))]
pub async fn create_user(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateUser>,
) -> ApiResult<(StatusCode, Json<UserView>)> {
    let tenant = target_tenant(&caller, body.tenant)?;
    let role = parse_role(&body.role)?;
    let (username, password) = (body.username, body.password);
    let permit = hash_permit().await?;
    let created = {
        let (tenant, username) = (tenant.clone(), username.clone());
        run_blocking(&state.registry, move |r| {
            let _permit = permit;
            r.create_user(&tenant, &username, role, password.as_deref())
        })
        .await
        .map_err(user_error)?
    };
    audit(
        &state,
        &tenant,
        &caller.actor(),
        "user.create",
        &username,
        "ok",
        role.as_str(),
    )
    .await;
    tracing::info!(tenant = %tenant, username = %username, role = %role, "User created.");
    Ok((
        StatusCode::CREATED,
        Json(UserView::new(created.user, created.generated_password)),
    ))
}

#[utoipa::path(get, path = "/api/v1/users", tag = "users", params(TenantParam),
    security(("api_key" = []), ("session_cookie" = [])),
    responses((status = 200, body = Vec<UserView>), (status = 403, body = Problem)))]
pub async fn list_users(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<TenantParam>,
) -> ApiResult<Json<Vec<UserView>>> {
    let tenant = target_tenant(&caller, q.tenant)?;
    let users = run_blocking(&state.registry, move |r| r.list_users(&tenant))
        .await
        .map_err(user_error)?;
    Ok(Json(
        users.into_iter().map(|u| UserView::new(u, None)).collect(),
    ))
}

#[utoipa::path(get, path = "/api/v1/users/{username}", tag = "users",
    params(("username" = String, Path), TenantParam), security(("api_key" = []), ("session_cookie" = [])),
    responses((status = 200, body = UserView), (status = 404, body = Problem, description = "`user_not_found`")))]
pub async fn get_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(username): Path<String>,
    ApiQuery(q): ApiQuery<TenantParam>,
) -> ApiResult<Json<UserView>> {
    let tenant = target_tenant(&caller, q.tenant)?;
    let user = run_blocking(&state.registry, move |r| r.get_user(&tenant, &username))
        .await
        .map_err(user_error)?;
    Ok(Json(UserView::new(user, None)))
}

#[utoipa::path(patch, path = "/api/v1/users/{username}", tag = "users", request_body = UpdateUser,
    params(("username" = String, Path), TenantParam), security(("api_key" = []), ("session_cookie" = [])),
    responses((status = 200, body = UserView), (status = 404, body = Problem, description = "`user_not_found`"),
        (status = 409, body = Problem, description = "Disabling or demoting oneself")))]
pub async fn update_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(username): Path<String>,
    ApiQuery(q): ApiQuery<TenantParam>,
    ApiJson(body): ApiJson<UpdateUser>,
) -> ApiResult<Json<UserView>> {
    let tenant = target_tenant(&caller, q.tenant)?;
    let patch = UserPatch {
        role: body.role.as_deref().map(parse_role).transpose()?,
        disabled: body.disabled,
    };
    if patch.disabled == Some(true) {
        not_oneself(&caller, &tenant, &username, "disable")?;
    }
    if patch.role.is_some_and(|role| role != Role::Admin) {
        not_oneself(&caller, &tenant, &username, "demote")?;
    }
    let user = {
        let (tenant, username, patch) = (tenant.clone(), username.clone(), patch.clone());
        run_blocking(&state.registry, move |r| {
            r.update_user(&tenant, &username, &patch)
        })
        .await
        .map_err(user_error)?
    };
    let detail = format!(
        "{}{}",
        patch.role.map_or(String::new(), |r| format!("role={r} ")),
        patch
            .disabled
            .map_or(String::new(), |d| format!("disabled={d}"))
    );
    audit(
        &state,
        &tenant,
        &caller.actor(),
        "user.update",
        &username,
        "ok",
        detail.trim(),
    )
    .await;
    tracing::info!(tenant = %tenant, username = %username, role = %user.role, disabled = user.disabled, "User updated.");
    Ok(Json(UserView::new(user, None)))
}

#[utoipa::path(delete, path = "/api/v1/users/{username}", tag = "users",
    params(("username" = String, Path), TenantParam), security(("api_key" = []), ("session_cookie" = [])),
    responses((status = 204, description = "Deleted with their sessions"),
        (status = 404, body = Problem, description = "`user_not_found`"),
        (status = 409, body = Problem, description = "Deleting oneself")))]
pub async fn delete_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(username): Path<String>,
    ApiQuery(q): ApiQuery<TenantParam>,
) -> ApiResult<StatusCode> {
    let tenant = target_tenant(&caller, q.tenant)?;
    not_oneself(&caller, &tenant, &username, "delete")?;
    {
        let (tenant, username) = (tenant.clone(), username.clone());
        run_blocking(&state.registry, move |r| r.delete_user(&tenant, &username))
            .await
            .map_err(user_error)?;
    }
    audit(
        &state,
        &tenant,
        &caller.actor(),
        "user.delete",
        &username,
        "ok",
        "",
    )
    .await;
    tracing::info!(tenant = %tenant, username = %username, "User deleted.");
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/users/{username}/password", tag = "users", request_body = ResetPassword,
    params(("username" = String, Path), TenantParam), security(("api_key" = []), ("session_cookie" = [])),
    responses((status = 200, body = UserView, description = "Reset; every session of the user ended; a generated `password` is shown only here"),
        (status = 404, body = Problem, description = "`user_not_found`"),
        (status = 422, body = Problem, description = "`weak_password`")))]
pub async fn reset_password(
    State(state): State<AppState>,
    caller: Caller,
    Path(username): Path<String>,
    ApiQuery(q): ApiQuery<TenantParam>,
    ApiJson(body): ApiJson<ResetPassword>,
) -> ApiResult<Json<UserView>> {
    let tenant = target_tenant(&caller, q.tenant)?;
    let permit = hash_permit().await?;
    let (generated, user) = {
        let (tenant, username) = (tenant.clone(), username.clone());
        run_blocking(&state.registry, move |r| {
            let generated = {
                let _permit = permit;
                r.reset_password(&tenant, &username, body.password.as_deref())?
            };
            Ok::<_, wulian_registry::Error>((generated, r.get_user(&tenant, &username)?))
        })
        .await
        .map_err(user_error)?
    };
    audit(
        &state,
        &tenant,
        &caller.actor(),
        "user.password_reset",
        &username,
        "ok",
        if generated.is_some() {
            "generated"
        } else {
            "chosen"
        },
    )
    .await;
    tracing::info!(tenant = %tenant, username = %username, "User password reset.");
    Ok(Json(UserView::new(user, generated)))
}
