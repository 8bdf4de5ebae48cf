//! Following the change feed from a hydrated page.
//!
//! The browser's `EventSource` reconnects by itself after a dropped connection and sends
//! `Last-Event-ID`, so the server replays what was missed (or says `resync`). When the
//! browser gives up, or the feed goes silent past its heartbeats, the page opens a new one
//! with backoff and reloads its data, since a new stream starts from now.

use leptos::prelude::*;

/// What the live indicator shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Not connected yet (and always, in server-rendered HTML).
    Connecting,
    /// Receiving changes.
    Live,
    /// Lost; trying again.
    Offline,
}

impl Link {
    /// Label for the indicator.
    pub fn label(self) -> &'static str {
        match self {
            Link::Connecting => "connecting",
            Link::Live => "live",
            Link::Offline => "offline",
        }
    }
}

/// The kinds of events a page listens to.
#[cfg(feature = "hydrate")]
const KINDS: [&str; 8] = [
    "hello",
    "heartbeat",
    "resync",
    "pipeline.created",
    "pipeline.updated",
    "run.created",
    "run.status",
    "stage.status",
];

/// Follows `GET /api/events{query}` while the page lives (in the browser only).
///
/// `on_change` runs for each change (pages render what changed afresh on the server, so
/// the change itself is not read here); `on_resync` runs when changes may have been missed.
/// Returns the link state for the indicator.
pub fn follow(query: String, on_change: Callback<()>, on_resync: Callback<()>) -> ReadSignal<Link> {
    let (link, set_link) = signal(Link::Connecting);
    #[cfg(feature = "hydrate")]
    {
        // The page going away ends the subscription.
        let (stop, stopped) = futures_channel::oneshot::channel::<()>();
        on_cleanup(move || {
            stop.send(()).ok();
        });
        let mut stopped = Some(stopped);
        Effect::new(move |_| {
            if let Some(stopped) = stopped.take() {
                leptos::task::spawn_local(run(query.clone(), on_change, on_resync, set_link, stopped));
            }
        });
    }
    #[cfg(not(feature = "hydrate"))]
    let _ = (query, on_change, on_resync, set_link);
    link
}

#[cfg(feature = "hydrate")]
async fn sleep(duration: std::time::Duration) {
    let (done, wait) = futures_channel::oneshot::channel::<()>();
    set_timeout(
        move || {
            done.send(()).ok();
        },
        duration,
    );
    wait.await.ok();
}

#[cfg(feature = "hydrate")]
async fn run(
    query: String,
    on_change: Callback<()>,
    on_resync: Callback<()>,
    link: WriteSignal<Link>,
    stopped: futures_channel::oneshot::Receiver<()>,
) {
    let url = format!("/api/events{query}");
    read_stream(&url, &KINDS, None, link, stopped, |events, reopened| {
        for (kind, _) in events {
            match kind.as_str() {
                // A new stream starts from now: once it says hello, reload whatever may
                // have changed while the page had none. (The browser's own reconnects
                // resume.)
                "hello" if reopened => on_resync.run(()),
                "hello" | "heartbeat" => {}
                "resync" => on_resync.run(()),
                _ => on_change.run(()),
            }
        }
        Read::More
    })
    .await;
}

/// Whether a stream's reader wants more.
#[cfg(feature = "hydrate")]
pub(crate) enum Read {
    /// Keep reading.
    More,
    /// Close the stream: it is over.
    Done,
}

/// Reads the event stream at `url` until `on_events` says it is done or the page goes away
/// (`stopped`).
///
/// Subscribes to `kinds` and hands `on_events` each batch of events already waiting (so a
/// burst is handled once; with `gather`, those that came that long after the first too),
/// with whether this stream was opened again after a lost one.
/// When the browser gives up, or the stream goes silent past its heartbeats, it opens a
/// new one with backoff; `link` says which state it is in.
#[cfg(feature = "hydrate")]
pub(crate) async fn read_stream(
    url: &str,
    kinds: &[&str],
    gather: Option<std::time::Duration>,
    link: WriteSignal<Link>,
    mut stopped: futures_channel::oneshot::Receiver<()>,
    mut on_events: impl FnMut(Vec<(String, web_sys::MessageEvent)>, bool) -> Read,
) {
    use futures_util::FutureExt;
    use futures_util::future::{Either, select};
    use futures_util::stream::{StreamExt, select_all};
    use gloo_net::eventsource::futures::EventSource;
    use std::time::Duration;

    // The server sends a heartbeat every 15 s; silence past this means the link is dead.
    const SILENCE: Duration = Duration::from_secs(35);
    let mut backoff = Duration::from_secs(1);
    let mut opened_before = false;
    loop {
        if let Ok(mut source) = EventSource::new(url) {
            let reopened = std::mem::replace(&mut opened_before, true);
            let streams: Vec<_> = kinds
                .iter()
                .filter_map(|kind| source.subscribe(*kind).ok())
                .collect();
            let mut events = select_all(streams);
            loop {
                let next = events.next();
                let timeout = sleep(SILENCE);
                futures_util::pin_mut!(next, timeout);
                let item = match select(select(next, timeout), &mut stopped).await {
                    Either::Left((Either::Left((item, _)), _)) => item,
                    Either::Left((Either::Right(_), _)) => None,
                    Either::Right(_) => {
                        source.close();
                        return;
                    }
                };
                let Some(Ok(first)) = item else { break };
                link.set(Link::Live);
                backoff = Duration::from_secs(1);
                let mut batch = vec![first];
                if let Some(gather) = gather {
                    sleep(gather).await;
                }
                while let Some(Some(Ok(item))) = events.next().now_or_never() {
                    batch.push(item);
                }
                if let Read::Done = on_events(batch, reopened) {
                    source.close();
                    return;
                }
            }
            source.close();
        }
        link.set(Link::Offline);
        let pause = sleep(backoff);
        futures_util::pin_mut!(pause);
        if let Either::Right(_) = select(pause, &mut stopped).await {
            return;
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// The small live/offline indicator.
#[component]
pub fn LiveIndicator(link: ReadSignal<Link>) -> impl IntoView {
    view! {
        <span
            class=move || format!("live live-{}", link.get().label())
            role="status"
            aria-live="polite"
            data-testid="live"
            title="Updates from the server"
        >
            {move || link.get().label()}
        </span>
    }
}
