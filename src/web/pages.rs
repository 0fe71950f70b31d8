//! The HTML pages: handlers that read the store ([`super::queries`]) and render the
//! embedded minijinja templates (`templates/web/`, HTML auto-escaping on), and the inline
//! SVG chart of consistency over time.

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use minijinja::value::Serde;
use minijinja::{Environment, Value, context};
use serde::Serialize;

use super::WebState;
use super::api::drift_filter;
use super::queries;
use crate::outbox::now_ms;
use crate::views::{self, ConsistencyPoint};

const TEMPLATES: [(&str, &str); 11] = [
    ("style.css", include_str!("../../templates/web/style.css")),
    ("base.html", include_str!("../../templates/web/base.html")),
    ("login.html", include_str!("../../templates/web/login.html")),
    ("error.html", include_str!("../../templates/web/error.html")),
    (
        "overview.html",
        include_str!("../../templates/web/overview.html"),
    ),
    ("drift.html", include_str!("../../templates/web/drift.html")),
    ("held.html", include_str!("../../templates/web/held.html")),
    (
        "dead_letters.html",
        include_str!("../../templates/web/dead_letters.html"),
    ),
    ("runs.html", include_str!("../../templates/web/runs.html")),
    ("run.html", include_str!("../../templates/web/run.html")),
    ("item.html", include_str!("../../templates/web/item.html")),
];

/// A time for people: `2026-11-23 22:41:07 UTC`, from Unix milliseconds or an RFC 3339
/// string; anything else as it is, nothing as `—`.
fn datetime(v: Value) -> String {
    let t = if let Some(ms) = v.as_i64() {
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
    } else if let Some(s) = v.as_str() {
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
    } else {
        return "—".into();
    };
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    match t.and_then(|t| t.format(&fmt).ok()) {
        Some(s) => format!("{s} UTC"),
        None => v.to_string(),
    }
}

/// The time of day of an RFC 3339 time or Unix milliseconds: `22:41:07 UTC`.
fn clock(v: Value) -> String {
    let full = datetime(v);
    full.split_once(' ')
        .map(|(_, t)| t.to_string())
        .unwrap_or(full)
}

/// Milliseconds since an RFC 3339 time (for "open for …").
fn since_ms(v: Value) -> Option<i64> {
    let t =
        time::OffsetDateTime::parse(v.as_str()?, &time::format_description::well_known::Rfc3339)
            .ok()?;
    Some(now_ms() - views::unix_ms(t))
}

/// A span of milliseconds in words: `45 s`, `12 min`, `3 h 5 min`, `2 d 4 h`.
fn span(ms: Option<i64>) -> String {
    let Some(ms) = ms else {
        return "—".into();
    };
    let ms = ms.max(0);
    let s = ms / 1000;
    match s {
        0..10 => format!("{:.1} s", ms as f64 / 1000.0),
        10..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86400, s % 86400 / 3600),
    }
}

/// `0.9876` as `98.76 %`.
fn percent(v: Option<f64>) -> String {
    v.map(|v| format!("{:.2} %", v * 100.0))
        .unwrap_or_else(|| "—".into())
}

/// The template environment: every template embedded, HTML auto-escaping for `.html`
/// (minijinja's default by file name), chainable undefined values (an absent optional
/// value renders as nothing).
pub fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Chainable);
    for (name, source) in TEMPLATES {
        if let Err(e) = env.add_template(name, source) {
            // The templates are embedded and covered by the tests: this is a build defect.
            tracing::error!(template = name, error = %e, "web template does not compile");
        }
    }
    env.add_filter("datetime", datetime);
    env.add_filter("span", span);
    env.add_filter("since_ms", since_ms);
    env.add_filter("clock", clock);
    env.add_filter("percent", percent);
    env.add_global("version", env!("CARGO_PKG_VERSION"));
    env
}

fn render(s: &WebState, status: StatusCode, name: &str, ctx: Value) -> Response {
    let page = s
        .templates
        .get_template(name)
        .and_then(|t| t.render(context! { now_ms => now_ms(), ..ctx }));
    match page {
        Ok(html) => (status, [(header::CACHE_CONTROL, "no-store")], Html(html)).into_response(),
        Err(e) => {
            tracing::error!(
                template = name,
                error = format!("{e:#}"),
                "web: rendering failed"
            );
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "could not render the page (see the daemon's log)",
            )
                .into_response()
        }
    }
}

fn error_page(s: &WebState, status: StatusCode, title: &str, message: &str) -> Response {
    render(
        s,
        status,
        "error.html",
        context! { title, message, status => status.as_u16() },
    )
}

fn store_failed(s: &WebState, e: anyhow::Error) -> Response {
    tracing::error!(error = format!("{e:#}"), "web: reading the store failed");
    error_page(
        s,
        StatusCode::INTERNAL_SERVER_ERROR,
        "Could not read the store",
        "The store could not be read; the daemon's log says why.",
    )
}

/// The page shown when the token is missing or wrong (or cannot be read), with a form to
/// enter it that comes back to `path`. Rendered without a [`WebState`], so it uses its own environment.
pub fn login_page(status: StatusCode, message: &str, path: &str) -> Html<String> {
    let env = environment();
    let html = env
        .get_template("login.html")
        .and_then(|t| {
            t.render(context! {
                title => "Token required",
                message,
                status => status.as_u16(),
                path,
                now_ms => now_ms(),
            })
        })
        .unwrap_or_else(|_| "token required".into());
    Html(html)
}

/// One line of the consistency chart.
#[derive(Debug, Serialize)]
struct Series {
    channel: String,
    colour: &'static str,
    points: String,
    last: String,
    dots: Vec<(f64, f64, String)>,
}

/// The chart of consistency over time: SVG coordinates computed here, drawn by the
/// template.
#[derive(Debug, Serialize)]
struct Chart {
    width: f64,
    height: f64,
    left: f64,
    top: f64,
    plot_w: f64,
    plot_h: f64,
    y_ticks: Vec<(f64, String)>,
    x_labels: Vec<(f64, String)>,
    series: Vec<Series>,
}

/// Rows the drift page shows at most (the API takes `limit` up to 10,000).
const PAGE_DRIFT_LIMIT: i64 = 1000;

const COLOURS: [&str; 6] = [
    "#0b5cad", "#d4731c", "#1a7f37", "#8250df", "#cf222e", "#57606a",
];

fn chart(points: &[ConsistencyPoint]) -> Option<Chart> {
    let mut runs: Vec<i64> = points.iter().map(|p| p.run_id).collect();
    runs.sort_unstable();
    runs.dedup();
    if runs.is_empty() {
        return None;
    }
    let (width, height, left, top, right, bottom) = (860.0, 260.0, 56.0, 14.0, 16.0, 34.0);
    let (plot_w, plot_h) = (width - left - right, height - top - bottom);
    // The y axis starts at the tenth below the lowest point, so 0.99 and 1.0 differ visibly.
    let low = points.iter().map(|p| p.consistency).fold(1.0_f64, f64::min);
    let floor = ((low * 10.0).floor() / 10.0).clamp(0.0, 0.9);
    let y = |v: f64| top + plot_h * (1.0 - (v - floor) / (1.0 - floor));
    let x = |run: i64| {
        let i = runs.iter().position(|r| *r == run).unwrap_or(0) as f64;
        if runs.len() == 1 {
            left + plot_w / 2.0
        } else {
            left + plot_w * i / (runs.len() - 1) as f64
        }
    };
    let steps = 4;
    let y_ticks = (0..=steps)
        .map(|i| {
            let v = floor + (1.0 - floor) * f64::from(i) / f64::from(steps);
            let label = format!("{:.1}", v * 100.0);
            let label = label.strip_suffix(".0").unwrap_or(&label);
            (y(v), format!("{label} %"))
        })
        .collect();
    let every = runs.len().div_ceil(10).max(1);
    let x_labels = runs
        .iter()
        .enumerate()
        .filter(|(i, _)| i % every == 0 || *i == runs.len() - 1)
        .map(|(_, r)| (x(*r), format!("#{r}")))
        .collect();
    let mut by_channel: BTreeMap<&str, Vec<&ConsistencyPoint>> = BTreeMap::new();
    for p in points {
        by_channel.entry(&p.channel).or_default().push(p);
    }
    let series = by_channel
        .into_iter()
        .enumerate()
        .map(|(i, (channel, ps))| Series {
            channel: channel.to_string(),
            colour: COLOURS[i % COLOURS.len()],
            points: ps
                .iter()
                .map(|p| format!("{:.1},{:.1}", x(p.run_id), y(p.consistency)))
                .collect::<Vec<_>>()
                .join(" "),
            last: ps
                .last()
                .map(|p| percent(Some(p.consistency)))
                .unwrap_or_default(),
            dots: ps
                .iter()
                .map(|p| {
                    (
                        x(p.run_id),
                        y(p.consistency),
                        format!(
                            "{channel}, run #{}: {} ({} of {} in sync)",
                            p.run_id,
                            percent(Some(p.consistency)),
                            p.in_sync,
                            p.checked
                        ),
                    )
                })
                .collect(),
        })
        .collect();
    Some(Chart {
        width,
        height,
        left,
        top,
        plot_w,
        plot_h,
        y_ticks,
        x_labels,
        series,
    })
}

/// `GET /`: channels, the consistency chart, recent runs.
pub async fn overview(State(s): State<WebState>) -> Response {
    let (store, config) = (s.engine.store(), s.engine.config());
    let overview = match views::overview(store, config).await {
        Ok(o) => o,
        Err(e) => return store_failed(&s, e),
    };
    let series = match views::consistency_series(store, None, 60).await {
        Ok(p) => p,
        Err(e) => return store_failed(&s, e),
    };
    render(
        &s,
        StatusCode::OK,
        "overview.html",
        context! {
            title => "Overview",
            nav => "/",
            overview => Serde(overview),
            chart => Serde(chart(&series)),
        },
    )
}

/// `GET /drift`: open drift with the filter form.
pub async fn drift(
    State(s): State<WebState>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let config = s.engine.config();
    let channels: Vec<String> = config.connectors.iter().map(|c| c.id.clone()).collect();
    let form = context! {
        channel => params.get("channel").cloned().unwrap_or_default(),
        cause => params.get("cause").cloned().unwrap_or_default(),
        field => params.get("field").cloned().unwrap_or_default(),
        older_than => params.get("older_than").cloned().unwrap_or_default(),
        sku => params.get("sku").cloned().unwrap_or_default(),
    };
    let causes = views::CAUSES;
    let fields = views::FIELDS;
    let base = context! { title => "Open drift", nav => "/drift", channels, causes, fields, form };
    let filter = match drift_filter(&s, &params) {
        Ok(f) => f,
        Err(message) => {
            return render(
                &s,
                StatusCode::BAD_REQUEST,
                "drift.html",
                context! { error => message, rows => Vec::<()>::new(), ..base },
            );
        }
    };
    let limit = filter.limit.unwrap_or(PAGE_DRIFT_LIMIT);
    let filter = views::DriftFilter {
        limit: Some(limit),
        ..filter
    };
    match views::open_drift(s.engine.store(), &filter, now_ms()).await {
        Ok(rows) => render(
            &s,
            StatusCode::OK,
            "drift.html",
            context! { rows => Serde(rows), limit, ..base },
        ),
        Err(e) => store_failed(&s, e),
    }
}

/// `GET /held`: corrections held for approval.
pub async fn held(State(s): State<WebState>) -> Response {
    match queries::held(s.engine.store(), 5000).await {
        Ok(rows) => render(
            &s,
            StatusCode::OK,
            "held.html",
            context! { title => "Held corrections", nav => "/held", rows => Serde(rows) },
        ),
        Err(e) => store_failed(&s, e),
    }
}

/// `GET /dead-letters`: corrections an API refused for good.
pub async fn dead_letters(State(s): State<WebState>) -> Response {
    match queries::dead_letters(s.engine.store(), 1000).await {
        Ok(rows) => render(
            &s,
            StatusCode::OK,
            "dead_letters.html",
            context! { title => "Dead letters", nav => "/dead-letters", rows => Serde(rows) },
        ),
        Err(e) => store_failed(&s, e),
    }
}

/// `GET /runs`: the latest runs.
pub async fn runs(State(s): State<WebState>) -> Response {
    match queries::runs(s.engine.store(), 50).await {
        Ok(rows) => render(
            &s,
            StatusCode::OK,
            "runs.html",
            context! { title => "Runs", nav => "/runs", rows => Serde(rows) },
        ),
        Err(e) => store_failed(&s, e),
    }
}

/// `GET /runs/{id}`: one run's report.
pub async fn run(State(s): State<WebState>, Path(id): Path<String>) -> Response {
    let Ok(n) = id.parse::<i64>() else {
        return error_page(
            &s,
            StatusCode::BAD_REQUEST,
            "Not a run id",
            &format!("{id:?} is not a run id."),
        );
    };
    match queries::run(s.engine.store(), n).await {
        Ok(Some((run, report))) => {
            let by_cause: BTreeMap<String, Value> = report
                .as_ref()
                .and_then(|r| r.get("channels"))
                .and_then(|c| c.as_array())
                .map(|cs| {
                    cs.iter()
                        .filter_map(|c| {
                            let id = c.get("id")?.as_str()?.to_string();
                            let causes = c.get("drift")?.get("by_cause")?.clone();
                            Some((id, Value::from(Serde(causes))))
                        })
                        .collect()
                })
                .unwrap_or_default();
            render(
                &s,
                StatusCode::OK,
                "run.html",
                context! {
                    title => format!("Run #{n}"),
                    nav => "/runs",
                    run => Serde(run),
                    by_cause,
                    report_json => report
                        .as_ref()
                        .and_then(|r| serde_json::to_string_pretty(r).ok()),
                },
            )
        }
        Ok(None) => error_page(
            &s,
            StatusCode::NOT_FOUND,
            "No such run",
            &format!("There is no run #{n}."),
        ),
        Err(e) => store_failed(&s, e),
    }
}

/// `GET /items/{sku}`: one item.
pub async fn item(State(s): State<WebState>, Path(sku): Path<String>) -> Response {
    match views::item(s.engine.store(), s.engine.config(), &sku).await {
        Ok(Some(item)) => render(
            &s,
            StatusCode::OK,
            "item.html",
            context! { title => format!("Item {sku}"), search_sku => sku, item => Serde(item) },
        ),
        Ok(None) => error_page(
            &s,
            StatusCode::NOT_FOUND,
            "Unknown SKU",
            &format!("No item with SKU {sku:?} is known to this daemon."),
        ),
        Err(e) => store_failed(&s, e),
    }
}

/// `GET /search?sku=`: to the item's page.
pub async fn search(
    State(s): State<WebState>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let sku = params.get("sku").map(|v| v.trim()).unwrap_or_default();
    if sku.is_empty() {
        return error_page(
            &s,
            StatusCode::BAD_REQUEST,
            "No SKU",
            "sku: enter a SKU to look up.",
        );
    }
    let to = format!("/items/{}", urlencode_path(sku));
    Redirect::to(&to).into_response()
}

/// Percent-encodes a path segment (everything but unreserved characters).
fn urlencode_path(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_spans_read_well() {
        assert_eq!(datetime(Value::from(0)), "1970-01-01 00:00:00 UTC");
        assert_eq!(
            datetime(Value::from("2026-11-23T22:41:07.5Z")),
            "2026-11-23 22:41:07 UTC"
        );
        assert_eq!(datetime(Value::from(())), "—");
        assert_eq!(clock(Value::from("2026-11-23T22:41:07Z")), "22:41:07 UTC");
        assert_eq!(span(Some(45_000)), "45 s");
        assert_eq!(span(Some(230)), "0.2 s");
        assert_eq!(span(Some(3_900_000)), "1 h 5 min");
        assert_eq!(span(Some(2 * 86_400_000 + 3_600_000)), "2 d 1 h");
        assert_eq!(percent(Some(0.98765)), "98.77 %");
    }

    #[test]
    fn every_template_compiles() {
        let env = environment();
        for (name, _) in TEMPLATES {
            env.get_template(name).unwrap();
        }
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(urlencode_path("JKT-000004"), "JKT-000004");
        assert_eq!(urlencode_path("a/b c<"), "a%2Fb%20c%3C");
    }

    #[test]
    fn the_chart_scales_to_the_lowest_point() {
        let p = |run_id, channel: &str, consistency| ConsistencyPoint {
            run_id,
            at: String::new(),
            converge_ms_p50: None,
            channel: channel.into(),
            checked: 100,
            in_sync: 90,
            consistency,
        };
        let c = chart(&[p(1, "a", 0.93), p(2, "a", 1.0), p(2, "b", 1.0)]).unwrap();
        assert_eq!(c.series.len(), 2);
        assert_eq!(c.y_ticks.first().unwrap().1, "90 %");
        assert_eq!(c.y_ticks.last().unwrap().1, "100 %");
        assert!(chart(&[]).is_none());
    }
}
