//! The parts of the OpenAPI document that no route carries: title, version,
//! security schemes and shared schemas. Routes add themselves (`api::routes`).

use utoipa::Modify;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Weft",
        description = "Run workflows of sandboxed WebAssembly components. Errors are `{\"error\": {\"code\", \"message\", \"details\"}}`.",
    ),
    modifiers(&Security),
    components(schemas(crate::scheduler::model::RunEvent)),
    tags(
        (name = "tenants", description = "Tenants and their limits (admin token)"),
        (name = "components", description = "The component registry"),
        (name = "workflows", description = "Workflow documents"),
        (name = "runs", description = "Runs of workflows"),
        (name = "secrets", description = "The tenant's secrets, which steps read (values are never returned)"),
        (name = "rate limits", description = "The tenant's rate limits, within which the steps that name one start"),
        (name = "schedules", description = "The tenant's schedules: published workflows started on a cron clock"),
        (name = "queues", description = "Queues of ready steps, each served by the nodes started with it (admin)"),
        (name = "health", description = "Probes and metrics"),
    ),
)]
struct Base;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = |what: &str| {
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(what.to_string()))
                    .build(),
            )
        };
        components.add_security_scheme("api_key", bearer("A tenant's API key"));
        components.add_security_scheme("admin_token", bearer("The admin token"));
    }
}

/// The document before routes are added.
pub fn base() -> utoipa::openapi::OpenApi {
    let mut api = Base::openapi();
    api.info.version = env!("CARGO_PKG_VERSION").to_string();
    api
}
