//! The event stream (server-sent events).

use super::*;

/// `?id=` of the event stream.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EventsQuery {
    id: Option<String>,
}

/// Lifecycle events, as server-sent events.
///
/// Each has `event:` the type and `data:` an Event (a `lagged` event's data says how many
/// this stream missed). The stream ends when the daemon shuts down.
#[utoipa::path(
    get,
    path = "/v1/events",
    operation_id = "events",
    params(("id" = Option<SandboxId>, Query, description = "Only this sandbox's events")),
    responses(
        (status = 200, description = "The event stream", body = crate::openapi::EventStreamItem, content_type = "text/event-stream"),
        (status = 400, description = "An invalid ID, or an unknown query parameter", body = ErrorBody),
    ),
)]
pub(super) async fn events(
    State(st): State<Shared>,
    q: Result<Query<EventsQuery>, QueryRejection>,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let Query(q) = q?;
    let filter = q.id.as_deref().map(parse_id).transpose()?;
    let rx = st.sup.events();
    let shutdown = st.shutdown.clone();
    let stream = futures_util::stream::unfold(
        (rx, shutdown, filter),
        |(mut rx, mut shutdown, filter)| async move {
            loop {
                if *shutdown.borrow() {
                    return None;
                }
                let ev = tokio::select! {
                    r = rx.recv() => r,
                    _ = shutdown.changed() => return None,
                };
                match ev {
                    Ok(ev) => {
                        if filter.as_ref().is_some_and(|f| *f != ev.id) {
                            continue;
                        }
                        let data = serde_json::to_value(&ev).unwrap_or(Value::Null);
                        let name = data
                            .get("type")
                            .and_then(Value::as_str)
                            .unwrap_or("event")
                            .to_owned();
                        let sse = SseEvent::default().event(name).data(data.to_string());
                        return Some((Ok(sse), (rx, shutdown, filter)));
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        let data = serde_json::to_string(&Lagged { missed: n }).unwrap_or_default();
                        let sse = SseEvent::default().event("lagged").data(data);
                        return Some((Ok(sse), (rx, shutdown, filter)));
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
