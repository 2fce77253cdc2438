//! The OpenAPI 3.1 document of the daemon's API, derived from the code: the paths from the
//! `#[utoipa::path]` handlers that [`crate::api::api_router`] registers (utoipa-axum's
//! `OpenApiRouter`: a route cannot exist without its entry here), the schemas from the
//! types they exchange (`#[derive(ToSchema)]`, with the constraints the validation
//! enforces, see `paddock_supervisor::schema`). What the derives cannot say is added below,
//! in code: the bearer token and its 401 on every operation, the links from a create to
//! the operations on what it created (for tools that chain requests), and the event
//! stream's items.
//!
//! `crates/paddock/openapi.json` is this document committed; `tests/openapi.rs` fails when
//! the two differ (`PADDOCK_UPDATE_OPENAPI=1 cargo test -p paddock --test openapi`
//! rewrites the file).

use std::borrow::Cow;
use std::sync::OnceLock;

use paddock_supervisor::{EventKind, SandboxSpec};
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{AdditionalProperties, Schema, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, ObjectBuilder, OpenApi, RefOr, ResponseBuilder};
use utoipa::{OpenApi as _, PartialSchema, ToSchema};

use crate::api::{ErrorBody, Lagged, MAX_BODY};
use crate::store::SequencedEvent;

#[derive(utoipa::OpenApi)]
#[openapi(
    components(schemas(crate::api::ApiDuration, crate::api::LabelSelectors)),
    info(
        title = "paddock daemon API",
        description = "Sandboxes on cgroup v2 whose every process lives and dies with the sandbox. Served on a unix socket (no token: the file mode controls access) and optionally on TCP, where every request needs `Authorization: Bearer <token>` (the scheme in any case), else 401. Access to this API is root on the node: payloads run as root, and stdio files are opened and created as root. Errors are `{\"error\": \"...\"}`: 400 when the request breaks this document (every rule about one field is in it; the message names the field; nothing changed), 422 when a create matches it but its fields do not fit together or this node cannot carry it out (the message names the field; nothing left behind)."
    )
)]
struct Base;

/// The document's root before the routes are added: info.
pub fn base() -> OpenApi {
    Base::openapi()
}

/// The body of a create: a [`SandboxSpec`] and an optional `"start": true`, in one object
/// (the spec's schema with one more property, so unknown fields stay refused).
pub struct CreateRequest;

impl PartialSchema for CreateRequest {
    fn schema() -> RefOr<Schema> {
        let RefOr::T(Schema::Object(mut spec)) = SandboxSpec::schema() else {
            unreachable!("SandboxSpec's schema is an object")
        };
        spec.description = Some(format!(
            "A SandboxSpec, and `\"start\": true` if you like: the daemon starts every sandbox it creates. At most {MAX_BODY} bytes; unknown fields and duplicate keys are refused"
        ));
        spec.properties.insert(
            "start".into(),
            ObjectBuilder::new()
                .schema_type(Type::Boolean)
                .enum_values(Some([true]))
                .description(Some("Only `true` (`false` is a 400)"))
                .into(),
        );
        RefOr::T(Schema::Object(spec))
    }
}

impl ToSchema for CreateRequest {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("CreateRequest")
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        <SandboxSpec as ToSchema>::schemas(schemas);
    }
}

/// One item of the `/v1/events` stream as a client parses it: `event` (the type) and
/// `id` (the event's seq) and `data` (JSON: a [`SequencedEvent`], or [`Lagged`] for
/// `lagged`, which has no `id`). Described the way OpenAPI 3.1
/// tools read an event stream: the media type's schema is one event.
pub struct EventStreamItem;

/// The `type` values of [`EventKind`], read from its derived schema.
fn event_types() -> Vec<String> {
    let mut types = Vec::new();
    if let RefOr::T(Schema::OneOf(one)) = EventKind::schema() {
        for item in one.items {
            if let RefOr::T(Schema::Object(o)) = item
                && let Some(RefOr::T(Schema::Object(t))) = o.properties.get("type")
            {
                for v in t.enum_values.iter().flatten() {
                    if let Some(s) = v.as_str() {
                        types.push(s.to_owned());
                    }
                }
            }
        }
    }
    assert!(!types.is_empty(), "EventKind's schema names no types");
    types
}

impl PartialSchema for EventStreamItem {
    fn schema() -> RefOr<Schema> {
        let mut types = event_types();
        types.push("lagged".into());
        let mut data = ObjectBuilder::new()
            .schema_type(Type::String)
            .content_media_type("application/json")
            .description(Some(
                "JSON: a SequencedEvent (an Event and its `seq`) whose `type` is the event's name, or for `lagged` how many events this stream could not deliver (the ring had dropped them)",
            ))
            .build();
        let mut ext = Extensions::default();
        // `contentSchema` (JSON Schema 2020-12), which utoipa's builder lacks.
        ext.insert(
            "contentSchema".into(),
            serde_json::json!({ "oneOf": [
                { "$ref": format!("#/components/schemas/{}", SequencedEvent::name()) },
                { "$ref": format!("#/components/schemas/{}", Lagged::name()) },
            ] }),
        );
        data.extensions = Some(ext);
        ObjectBuilder::new()
            .description(Some(
                "One server-sent event: `event:` its type, `id:` its seq (none for `lagged`), `data:` its JSON (keep-alive comments carry no data)",
            ))
            .property(
                "event",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(types)),
            )
            .required("event")
            .property(
                "id",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some("^[1-9][0-9]*$"))
                    .description(Some(
                        "The event's seq (absent for `lagged`): send it back as `Last-Event-ID` or `since` to resume after it",
                    )),
            )
            .property("data", data)
            .required("data")
            .additional_properties(Some(AdditionalProperties::FreeForm(false)))
            .into()
    }
}

impl ToSchema for EventStreamItem {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("EventStreamItem")
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((SequencedEvent::name().into(), SequencedEvent::schema()));
        <SequencedEvent as ToSchema>::schemas(schemas);
        schemas.push((Lagged::name().into(), Lagged::schema()));
        <Lagged as ToSchema>::schemas(schemas);
    }
}

/// The operations a created sandbox's `id` and `lifecycle` lead to, by operation ID.
const LINKED: [(&str, &str); 9] = [
    ("get", "get_sandbox"),
    ("stop", "stop_sandbox"),
    ("kill", "kill_sandbox"),
    ("pause", "pause_sandbox"),
    ("resume", "resume_sandbox"),
    ("logs", "sandbox_logs"),
    ("stats", "sandbox_stats"),
    ("wait", "wait_sandbox"),
    ("delete", "delete_sandbox"),
];

/// The operations on a created sandbox that take its ID only (no `?lifecycle=`).
const LINKED_BY_ID: [(&str, &str); 2] = [
    ("update", "update_sandbox"),
    ("deadline", "extend_sandbox_deadline"),
];

fn operations(doc: &mut OpenApi) -> impl Iterator<Item = &mut Operation> {
    doc.paths.paths.values_mut().flat_map(|item| {
        [
            item.get.as_mut(),
            item.put.as_mut(),
            item.post.as_mut(),
            item.delete.as_mut(),
            item.options.as_mut(),
            item.head.as_mut(),
            item.patch.as_mut(),
            item.trace.as_mut(),
        ]
        .into_iter()
        .flatten()
    })
}

/// The document.
pub fn document() -> OpenApi {
    let mut doc = crate::api::api_router().into_openapi();

    // The bearer token of the TCP listener: required by every operation there, a 401 without.
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
    );
    doc.security = Some(vec![SecurityRequirement::new(
        "bearer",
        Vec::<String>::new(),
    )]);
    for op in operations(&mut doc) {
        op.responses.responses.insert(
            "401".into(),
            ResponseBuilder::new()
                .description("TCP only: no bearer token, or a wrong one")
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                            ErrorBody::name(),
                        ))))
                        .build(),
                )
                .into(),
        );
    }

    // Links: from a created sandbox to every operation on it. (utoipa 5 writes a link's
    // `operationId` as `operation_id`; the key is set as written in the specification.)
    let create = doc
        .paths
        .paths
        .get_mut("/v1/sandboxes")
        .and_then(|item| item.post.as_mut())
        .expect("POST /v1/sandboxes is routed");
    let Some(RefOr::T(created)) = create.responses.responses.get_mut("201") else {
        panic!("POST /v1/sandboxes has a 201 answer");
    };
    let by_lifecycle = LINKED.iter().map(|l| (l, true));
    for ((name, operation_id), lifecycle) in
        by_lifecycle.chain(LINKED_BY_ID.iter().map(|l| (l, false)))
    {
        let mut ext = Extensions::default();
        ext.insert("operationId".into(), (*operation_id).into());
        let mut link = LinkBuilder::new()
            .description(format!("The {name} operation on the created sandbox"))
            .parameter("path.id", "$response.body#/id");
        if lifecycle {
            link = link.parameter("query.lifecycle", "$response.body#/lifecycle");
        }
        let link = link.extensions(Some(ext)).build();
        created.links.insert((*name).into(), link.into());
    }
    assert!(
        operations(&mut doc).all(|op| op.operation_id.is_some()),
        "every operation has an ID"
    );
    for (_, id) in LINKED.iter().chain(&LINKED_BY_ID) {
        assert!(
            operations(&mut doc).any(|op| op.operation_id.as_deref() == Some(id)),
            "a link names operation {id}, which does not exist"
        );
    }
    doc
}

/// Marks every variant of the internally tagged enum schema `name` as closed
/// (`additionalProperties: false`): the type denies unknown fields
/// (`#[serde(deny_unknown_fields)]`), which utoipa states for structs but not for the
/// variants of a tagged enum — so a body the document allowed was refused with a 400.
fn closed_variants(doc: &mut serde_json::Value, name: &str) {
    let variants = doc
        .pointer_mut(&format!("/components/schemas/{name}/oneOf"))
        .and_then(serde_json::Value::as_array_mut)
        .unwrap_or_else(|| panic!("schema {name} is a oneOf"));
    for v in variants {
        if let Some(o) = v.as_object_mut() {
            o.insert(
                "additionalProperties".into(),
                serde_json::Value::Bool(false),
            );
        }
    }
}

/// The document as pretty JSON with a trailing newline (the committed file's format), its
/// keys sorted.
pub fn document_string() -> String {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut v = serde_json::to_value(document()).expect("the document serialises");
        closed_variants(&mut v, "MountSpec");
        let mut s = serde_json::to_string_pretty(&v).expect("a JSON value serialises");
        s.push('\n');
        s
    })
    .clone()
}
