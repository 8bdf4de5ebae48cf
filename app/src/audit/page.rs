//! The audit page (admins): the trail, newest first, filtered by a plain GET form so every
//! view is a URL; no script needed.

use leptos::prelude::*;
use leptos_router::hooks::use_query_map;

use super::{AuditCriteria, AuditFilter, audit_page};
use crate::filter::TextFilter;
use crate::layout::Frame;
use crate::ui::{ErrorView, when};

/// Events per page.
const PAGE_SIZE: i64 = 50;

/// The page's query string: `actor`, `action`, `target` (contain, any case), `outcome`,
/// `request_id` (exact) and `page`.
#[derive(Debug, Clone, Default, PartialEq)]
struct AuditQuery {
    actor: String,
    action: String,
    target: String,
    outcome: String,
    request_id: String,
    page: i64,
}

impl AuditQuery {
    fn from_url() -> Self {
        let q = use_query_map().get_untracked();
        let text = |name: &str| q.get(name).map(|v| v.trim().to_owned()).unwrap_or_default();
        Self {
            actor: text("actor"),
            action: text("action"),
            target: text("target"),
            outcome: text("outcome"),
            request_id: text("request_id"),
            page: q
                .get("page")
                .and_then(|p| p.parse().ok())
                .filter(|p| *p >= 1)
                .unwrap_or(1),
        }
    }

    fn filter(&self) -> AuditFilter {
        let like = |v: &str| {
            (!v.is_empty()).then(|| TextFilter {
                like_: Some(v.to_owned()),
                ..TextFilter::default()
            })
        };
        let exact = |v: &str| {
            (!v.is_empty()).then(|| TextFilter {
                eq_: Some(v.to_owned()),
                ..TextFilter::default()
            })
        };
        AuditFilter {
            audit_events: AuditCriteria {
                actor: like(&self.actor),
                action: like(&self.action),
                target: like(&self.target),
                outcome: exact(&self.outcome),
                request_id: exact(&self.request_id),
                ..AuditCriteria::default()
            },
            limit: Some(PAGE_SIZE),
            offset: Some((self.page - 1).saturating_mul(PAGE_SIZE)),
            ..AuditFilter::default()
        }
    }

    /// This query on another page.
    fn url(&self, page: i64) -> String {
        let mut url = form_urlencoded::Serializer::new(String::new());
        for (name, value) in [
            ("actor", &self.actor),
            ("action", &self.action),
            ("target", &self.target),
            ("outcome", &self.outcome),
            ("request_id", &self.request_id),
        ] {
            if !value.is_empty() {
                url.append_pair(name, value);
            }
        }
        if page > 1 {
            url.append_pair("page", &page.to_string());
        }
        format!("/audit?{}", url.finish())
    }
}

/// The audit trail for admins.
#[component]
pub fn AuditTrailPage() -> impl IntoView {
    let query = AuditQuery::from_url();
    let data = OnceResource::new(audit_page(query.filter()));
    let q = query.clone();
    view! {
        <Frame>
            <section class="page-head">
                <h1>"Audit trail"</h1>
            </section>
            <form class="toolbar" method="get" action="/audit" role="search">
                <input name="actor" placeholder="Actor" value=q.actor.clone() aria-label="Actor contains" />
                <input name="action" placeholder="Action" value=q.action.clone() aria-label="Action contains" />
                <input name="target" placeholder="Target" value=q.target.clone() aria-label="Target contains" />
                <select name="outcome" aria-label="Outcome">
                    <option value="" selected=q.outcome.is_empty()>"Any outcome"</option>
                    <option value="success" selected=q.outcome == "success">"success"</option>
                    <option value="denied" selected=q.outcome == "denied">"denied"</option>
                </select>
                <input name="request_id" placeholder="Request id" value=q.request_id.clone() aria-label="Request id" />
                <button type="submit">"Filter"</button>
            </form>
            <Suspense fallback=|| view! { <p class="muted">"Loading the trail…"</p> }>
                {move || {
                    let query = query.clone();
                    Suspend::new(async move {
                        match data.await {
                            Err(error) => view! { <ErrorView error /> }.into_any(),
                            Ok(listing) => view! { <AuditTable listing query /> }.into_any(),
                        }
                    })
                }}
            </Suspense>
        </Frame>
    }
}

#[component]
fn AuditTable(listing: super::AuditListing, query: AuditQuery) -> impl IntoView {
    let pages = ((listing.total + PAGE_SIZE - 1) / PAGE_SIZE).max(1);
    let page = query.page;
    let rows = listing
        .events
        .into_iter()
        .map(|e| {
            let denied = e.outcome != "success";
            view! {
                <tr class:denied=denied>
                    <td class="nowrap">{when(Some(e.occurred_at))}</td>
                    <td>{e.actor}</td>
                    <td>{e.role.unwrap_or_default()}</td>
                    <td><code>{e.action}</code></td>
                    <td>{e.target.unwrap_or_default()}</td>
                    <td><span class=format!("badge badge-{}", if denied { "failed" } else { "completed" })>{e.outcome}</span></td>
                    <td><code class="small">{e.request_id.unwrap_or_default()}</code></td>
                    <td>{e.source_addr.unwrap_or_default()}</td>
                </tr>
            }
        })
        .collect_view();
    view! {
        <p class="muted">{format!("{} events", listing.total)}</p>
        <section class="card" aria-label="Audit events" tabindex="0">
        <table class="grid audit">
            <thead>
                <tr>
                    <th>"Time (UTC)"</th>
                    <th>"Actor"</th>
                    <th>"Role"</th>
                    <th>"Action"</th>
                    <th>"Target"</th>
                    <th>"Outcome"</th>
                    <th>"Request id"</th>
                    <th>"Source"</th>
                </tr>
            </thead>
            <tbody>{rows}</tbody>
        </table>
        </section>
        <nav class="pager" aria-label="Pages">
            {(page > 1).then(|| view! { <a href=query.url(page - 1)>"← Newer"</a> })}
            <span>{format!("Page {page} of {pages}")}</span>
            {(page < pages).then(|| view! { <a href=query.url(page + 1)>"Older →"</a> })}
        </nav>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_query_becomes_a_filter_and_a_url() {
        let query = AuditQuery {
            actor: "ci".into(),
            outcome: "denied".into(),
            page: 3,
            ..AuditQuery::default()
        };
        let filter = query.filter();
        assert_eq!(filter.audit_events.actor.unwrap().like_.as_deref(), Some("ci"));
        assert_eq!(
            filter.audit_events.outcome.unwrap().eq_.as_deref(),
            Some("denied")
        );
        assert!(filter.audit_events.action.is_none());
        assert_eq!(filter.offset, Some(2 * PAGE_SIZE));
        assert_eq!(query.url(4), "/audit?actor=ci&outcome=denied&page=4");
        assert_eq!(query.url(1), "/audit?actor=ci&outcome=denied");
    }
}
