//! Small SVG pictures drawn by components.
//!
//! A run's stage timeline, a pipeline's duration trend, the dashboard's sparklines and
//! status bar. Colours come from the status classes in the stylesheet, so dark mode follows.

use chrono::{DateTime, Utc};
use leptos::prelude::*;

use super::Stage;
use crate::status::RunStatus;

/// A stage's bar: where it starts and ends, as fractions of the timeline.
type Span = Option<(f64, f64)>;

/// The timeline's length in seconds and each stage's bar (`None` before it starts).
fn spans(stages: &[Stage], now: DateTime<Utc>) -> Option<(f64, Vec<Span>)> {
    let start = stages.iter().filter_map(|s| s.started_at).min()?;
    let end_of = |s: &Stage| s.completed_at.or_else(|| s.started_at.map(|_| now));
    let end = stages.iter().filter_map(end_of).max()?.max(start);
    let total = ((end - start).num_milliseconds() as f64 / 1000.0).max(0.001);
    let fraction =
        |t: DateTime<Utc>| ((t - start).num_milliseconds() as f64 / 1000.0 / total).clamp(0.0, 1.0);
    let bars = stages
        .iter()
        .map(|s| Some((fraction(s.started_at?), fraction(end_of(s)?))))
        .collect();
    Some((total, bars))
}

/// A Gantt chart of a run's stages: one bar per stage from its start to its end (or now,
/// while it runs).
#[component]
pub fn StageTimeline(stages: Vec<Stage>, now: DateTime<Utc>) -> impl IntoView {
    const LABEL: f64 = 170.0;
    const WIDTH: f64 = 640.0;
    const ROW: f64 = 26.0;
    let height = ROW * stages.len() as f64 + 24.0;
    let Some((total, bars)) = spans(&stages, now) else {
        return view! { <p class="muted small" data-testid="timeline-empty">"The timeline starts when the first stage does."</p> }
            .into_any();
    };
    let area = WIDTH - LABEL - 10.0;
    view! {
        <svg
            class="chart timeline"
            viewBox=format!("0 0 {WIDTH} {height}")
            role="img"
            aria-label=format!("Stage timeline over {total:.1} seconds")
            data-testid="timeline"
        >
            {stages
                .iter()
                .zip(bars)
                .enumerate()
                .map(|(i, (stage, bar))| {
                    let y = ROW * i as f64;
                    let label = stage.name.clone();
                    let bar = bar.map(|(from, to)| {
                        let x = LABEL + from * area;
                        let w = ((to - from) * area).max(2.0);
                        let title = format!("{}: {}", stage.name, stage.status.as_str());
                        view! {
                            <rect class=format!("bar s-{}", stage.status.as_str()) x=x y=y + 5.0 width=w height=ROW - 10.0 rx="3">
                                <title>{title}</title>
                            </rect>
                        }
                    });
                    view! {
                        <g data-testid="timeline-row">
                            <text x="0" y=y + ROW * 0.65 class="label">{label}</text>
                            {bar}
                        </g>
                    }
                })
                .collect_view()}
            <text x=LABEL y=height - 6.0 class="axis">"0 s"</text>
            <text x=WIDTH - 10.0 y=height - 6.0 class="axis" text-anchor="end">{format!("{total:.1} s")}</text>
        </svg>
    }
    .into_any()
}

/// One past run for a trend: its status and how long it took.
pub type Point = (RunStatus, Option<f64>);

/// Bars of run durations, oldest to newest, coloured by outcome; with the success rate.
#[component]
pub fn DurationTrend(points: Vec<Point>) -> impl IntoView {
    let finished: Vec<&Point> = points.iter().filter(|(s, _)| s.is_terminal()).collect();
    let succeeded = finished
        .iter()
        .filter(|(s, _)| *s == RunStatus::Completed)
        .count();
    let rate = (!finished.is_empty()).then(|| 100.0 * succeeded as f64 / finished.len() as f64);
    let longest = points.iter().filter_map(|(_, d)| *d).reduce(f64::max);
    // Unfinished runs have no duration: they are drawn as stubs, and no axis is labelled.
    let scale = longest.unwrap_or(0.0).max(0.001);
    const WIDTH: f64 = 400.0;
    const HEIGHT: f64 = 80.0;
    // Room for 20 runs, so a short history does not draw slabs.
    let step = WIDTH / points.len().max(20) as f64;
    view! {
        <div class="trend">
            <p class="small" data-testid="success-rate">
                {match rate {
                    Some(rate) => format!("{rate:.0}% of the last {} finished runs succeeded", finished.len()),
                    None => "No finished runs yet".to_owned(),
                }}
            </p>
            <svg class="chart" viewBox=format!("0 0 {WIDTH} {HEIGHT}") role="img" aria-label="Run durations, oldest to newest">
                {points
                    .iter()
                    .enumerate()
                    .map(|(i, (status, seconds))| {
                        let h = seconds.map_or(3.0, |s| (s / scale * (HEIGHT - 4.0)).max(3.0));
                        let title = format!("{}: {}", status.as_str(), crate::ui::duration(*seconds));
                        view! {
                            <rect class=format!("bar s-{}", status.as_str()) x=i as f64 * step + 1.0 y=HEIGHT - h width=(step - 2.0).max(1.0) height=h>
                                <title>{title}</title>
                            </rect>
                        }
                    })
                    .collect_view()}
                {longest.map(|longest| view! {
                    <text x=WIDTH - 2.0 y="10" class="axis" text-anchor="end">{format!("longest {}", crate::ui::duration(Some(longest)))}</text>
                })}
            </svg>
        </div>
    }
}

/// A tiny strip of the last runs' outcomes, oldest to newest.
#[component]
pub fn Sparkline(points: Vec<Point>) -> impl IntoView {
    let label = format!("Last {} runs", points.len());
    view! {
        <svg class="chart spark" viewBox="0 0 100 14" role="img" aria-label=label>
            {points
                .iter()
                .enumerate()
                .map(|(i, (status, _))| {
                    view! { <rect class=format!("bar s-{}", status.as_str()) x=i as f64 * 10.0 + 1.0 y="2" width="8" height="10" rx="1" /> }
                })
                .collect_view()}
        </svg>
    }
}

/// Every pipeline by its latest status, as one stacked bar.
#[component]
pub fn StatusBar(counts: Vec<(RunStatus, i64)>) -> impl IntoView {
    let total = counts.iter().map(|(_, n)| *n).sum::<i64>().max(1) as f64;
    let mut x = 0.0;
    let parts: Vec<_> = counts
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(status, n)| {
            let w = *n as f64 / total * 200.0;
            let part = (x, w, *status, *n);
            x += w;
            part
        })
        .collect();
    view! {
        <svg class="chart statusbar" viewBox="0 0 200 10" role="img" aria-label="Pipelines by latest status" preserveAspectRatio="none">
            {parts
                .into_iter()
                .map(|(x, w, status, n)| view! {
                    <rect class=format!("bar s-{}", status.as_str()) x=x y="0" width=w height="10">
                        <title>{format!("{}: {n}", status.as_str())}</title>
                    </rect>
                })
                .collect_view()}
        </svg>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_span_from_each_start_to_each_end_or_now() {
        let t0 = Utc::now();
        let at = |s: i64| Some(t0 + chrono::Duration::seconds(s));
        let mut a = Stage::planned(1, 0, "a");
        a.started_at = at(0);
        a.completed_at = at(2);
        let mut b = Stage::planned(1, 1, "b");
        b.started_at = at(2);
        let c = Stage::planned(1, 2, "c");
        let (total, bars) = spans(&[a, b, c], t0 + chrono::Duration::seconds(4)).unwrap();
        assert!((total - 4.0).abs() < 1e-9);
        assert_eq!(bars, vec![Some((0.0, 0.5)), Some((0.5, 1.0)), None]);
        assert!(
            spans(&[Stage::planned(1, 0, "x")], t0).is_none(),
            "nothing started, no timeline"
        );
    }
}
