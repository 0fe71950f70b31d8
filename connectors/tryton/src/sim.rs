//! A loopback simulator of trytond 8.0's JSON-RPC API, for tests, demos and rehearsals.
//!
//! It answers `POST /{database}/rpc/` the way trytond does (see `rpc.rs` for the protocol
//! facts) for the calls the connector makes and a few more:
//!
//! | method | notes |
//! |---|---|
//! | `common.db.login`, `common.db.logout` | password login, session tokens; too many failed logins → 429 |
//! | `model.product.product.search_read` / `search` / `search_count` / `read` | domains (`=`, `!=`, `<`…`>=`, `in`, `not in`, `like`, `ilike`, `AND`/`OR`), order, offset, limit; `list_price`, `list_price_used`, `quantity`, `forecast_quantity` from the context (`company`, `locations`) |
//! | `model.stock.location.read` / `search_read` | unknown ids → trytond's `UserError` |
//! | `model.company.company.read` | `currency.code` (dotted fields) |
//! | `common.server.version`, `common.db.list` | on `POST /rpc/` |
//!
//! Answers copy trytond's: HTTP 401 HTML page for a refused password, HTTP 401 with
//! `WWW-Authenticate: Basic realm="Tryton"` and an empty body for a missing or unknown
//! session, HTTP 403 for a method the model does not expose, HTTP 404 for another database,
//! HTTP 429 after `max_login_attempts` failed logins, `{"id", "error": [...]}` for method
//! errors, and `Content-Encoding: gzip` on answers over 1400 bytes (compressed only when the
//! client accepts gzip).
//!
//! Products live in a `BTreeMap` by id with a code index, so a page by id range or by
//! `id in`/`code in` costs O(page), and seeding 100,000 products takes milliseconds.
//! The [`SimControl`] view uses the connector's terms: SKU = product code, location codes =
//! location ids as strings, prices in the company currency; [`SimRecord::stock`] is Tryton's
//! `quantity` (the forecast equals it unless [`Simulator::set_quantities`] says otherwise).

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::net::SocketAddr;
use std::ops::Bound;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use omnisync_sdk::sim::{
    Faults, SimControl, SimCounters, SimRecord, SimServer, admin_router, fault_layer,
};
use omnisync_sdk::{Currency, Money, Offer, SecretRef};
use serde_json::{Map, Value, json};

use crate::settings::Settings;

/// One stock location of the simulated Tryton.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimLocation {
    /// The `stock.location` id (the connector's location code is this id as a string).
    pub id: i64,
    /// Tryton's short location code (not the connector's location code).
    pub code: String,
    /// The location name.
    pub name: String,
    /// The location type (`storage`, `warehouse`, `view`, …).
    pub kind: String,
}

impl SimLocation {
    fn new(id: i64, code: &str, name: &str, kind: &str) -> Self {
        SimLocation {
            id,
            code: code.to_string(),
            name: name.to_string(),
            kind: kind.to_string(),
        }
    }
}

/// Simulator options. The default is a demo Tryton:
///
/// - database **`omnisync`**, user **`admin`** with password **`admin`** (user id 1);
/// - company **1** ("Omnisync Demo AS") keeping prices in **NOK**;
/// - locations **3** "Oslo store", **7** "Bergen store", **11** "Central warehouse"
///   (location codes `"3"`, `"7"`, `"11"`);
/// - trytond's limits: 5 failed logins before 429, gzip marking above 1400 bytes.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// The database name served at `/{database}/rpc/`.
    pub database: String,
    /// The one user's login.
    pub login: String,
    /// The one user's password.
    pub password: String,
    /// The user's id (returned by the login).
    pub user_id: i64,
    /// The company id whose prices are stored.
    pub company: i64,
    /// The company name.
    pub company_name: String,
    /// The company currency.
    pub currency: Currency,
    /// The stock locations.
    pub locations: Vec<SimLocation>,
    /// Failed logins per login name after which trytond answers 429 (`[session] max_attempt`).
    pub max_login_attempts: u32,
    /// Answers longer than this are marked `Content-Encoding: gzip` (trytond's 1400 bytes).
    pub gzip_threshold: usize,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            database: "omnisync".to_string(),
            login: "admin".to_string(),
            password: "admin".to_string(),
            user_id: 1,
            company: 1,
            company_name: "Omnisync Demo AS".to_string(),
            currency: Currency::NOK,
            locations: vec![
                SimLocation::new(3, "OSL", "Oslo store", "warehouse"),
                SimLocation::new(7, "BGO", "Bergen store", "warehouse"),
                SimLocation::new(11, "CWH", "Central warehouse", "warehouse"),
            ],
            max_login_attempts: 5,
            gzip_threshold: 1400,
        }
    }
}

impl SimOptions {
    /// Adapter settings for this simulator at `base_url` (a literal password; all locations).
    pub fn settings(&self, base_url: &str) -> Settings {
        let mut s = Settings::new(
            base_url,
            self.database.clone(),
            self.login.clone(),
            SecretRef::Literal(self.password.clone()),
            self.company,
            self.locations.iter().map(|l| l.id).collect(),
        );
        s.currency = self.currency.code().to_string();
        s
    }
}

/// One product as the simulator stores it, in Tryton's raw terms.
#[derive(Debug, Clone, PartialEq)]
pub struct SimProduct {
    /// The product code (SKU); `None` for a product without one.
    pub code: Option<String>,
    /// The name.
    pub name: String,
    /// The list price as the decimal string trytond sends (`"199.00"`), or `None`.
    pub list_price: Option<String>,
    /// Inactive products are hidden by the default domain.
    pub active: bool,
    /// `(quantity, forecast_quantity)` per location id.
    pub stock: BTreeMap<i64, (f64, f64)>,
}

#[derive(Debug, Default)]
struct StateInner {
    products: BTreeMap<i64, SimProduct>,
    by_code: HashMap<String, i64>,
    next_id: i64,
    /// Session token → user id.
    sessions: HashMap<String, i64>,
    /// Failed logins per login name.
    failed_logins: HashMap<String, u32>,
}

impl StateInner {
    fn insert(&mut self, product: SimProduct) -> i64 {
        self.next_id += 1;
        let id = self.next_id;
        if let Some(code) = &product.code {
            self.by_code.insert(code.clone(), id);
        }
        self.products.insert(id, product);
        id
    }

    fn id_of(&self, sku: &str) -> Option<i64> {
        self.by_code.get(sku).copied()
    }

    /// Applies `edit` to the product with code `sku`; `false` if there is none.
    fn edit(&mut self, sku: &str, edit: impl FnOnce(&mut SimProduct)) -> bool {
        let product = self.id_of(sku).and_then(|id| self.products.get_mut(&id));
        product.map(edit).is_some()
    }
}

/// A running simulated Tryton (shared by the HTTP handlers and the admin API).
#[derive(Debug)]
pub struct Simulator {
    options: SimOptions,
    state: Mutex<StateInner>,
    faults: Faults,
    counters: SimCounters,
    logins: AtomicU64,
}

impl Simulator {
    /// A simulator with an empty catalog.
    pub fn new(options: SimOptions) -> Self {
        Simulator {
            options,
            state: Mutex::new(StateInner::default()),
            faults: Faults::default(),
            counters: SimCounters::default(),
            logins: AtomicU64::new(0),
        }
    }

    /// The options it runs with.
    pub fn options(&self) -> &SimOptions {
        &self.options
    }

    fn state(&self) -> std::sync::MutexGuard<'_, StateInner> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a product in raw Tryton terms (e.g. without a code, with an odd price or a
    /// fractional quantity) and returns its id.
    pub fn insert_product(&self, product: SimProduct) -> i64 {
        self.state().insert(product)
    }

    /// The admin view of one product: active, with a code and a price in the company
    /// currency; stock per configured location (quantity, truncated).
    fn view(&self, p: &SimProduct) -> Option<SimRecord> {
        if !p.active {
            return None;
        }
        let sku = p.code.clone()?;
        let price = Money::parse_major(p.list_price.as_deref()?, self.options.currency).ok()?;
        let stock = self
            .options
            .locations
            .iter()
            .map(|l| {
                let q = p.stock.get(&l.id).map_or(0.0, |s| s.0);
                (l.id.to_string(), q.trunc() as i64)
            })
            .collect();
        Some(SimRecord {
            sku,
            title: p.name.clone(),
            offer: Offer::regular(price),
            stock,
        })
    }

    /// The product id for a code.
    pub fn product_id(&self, sku: &str) -> Option<i64> {
        self.state().id_of(sku)
    }

    /// Sets `quantity` and `forecast_quantity` at a location id. `false` if unknown.
    pub fn set_quantities(&self, sku: &str, location: i64, quantity: f64, forecast: f64) -> bool {
        if !self.options.locations.iter().any(|l| l.id == location) {
            return false;
        }
        self.state().edit(sku, |p| {
            p.stock.insert(location, (quantity, forecast));
        })
    }

    /// Activates or deactivates a product. `false` if unknown.
    pub fn set_active(&self, sku: &str, active: bool) -> bool {
        self.state().edit(sku, |p| p.active = active)
    }

    /// Forgets every session, as trytond does once `[session] max_age` has passed.
    pub fn expire_sessions(&self) {
        self.state().sessions.clear();
    }

    /// Successful logins so far.
    pub fn logins(&self) -> u64 {
        self.logins.load(Ordering::Relaxed)
    }

    fn is_location(&self, code: &str) -> Option<i64> {
        let id = code.parse::<i64>().ok()?;
        self.options
            .locations
            .iter()
            .any(|l| l.id == id)
            .then_some(id)
    }

    fn product_from(&self, record: &SimRecord) -> SimProduct {
        let mut stock = BTreeMap::new();
        for (code, &q) in &record.stock {
            match self.is_location(code) {
                Some(id) => {
                    stock.insert(id, (q as f64, q as f64));
                }
                None => tracing::warn!(
                    sku = %record.sku,
                    location = %code,
                    "Simulator ignores stock at an unknown location."
                ),
            }
        }
        SimProduct {
            code: Some(record.sku.clone()),
            name: record.title.clone(),
            list_price: Some(record.offer.price.major_string()),
            active: true,
            stock,
        }
    }
}

impl SimControl for Simulator {
    fn kind(&self) -> &'static str {
        crate::KIND
    }

    fn seed(&self, records: Vec<SimRecord>) {
        let products: Vec<SimProduct> = records.iter().map(|r| self.product_from(r)).collect();
        let mut state = self.state();
        state.products.clear();
        state.by_code.clear();
        state.next_id = 0;
        for p in products {
            state.insert(p);
        }
    }

    fn records(&self) -> Vec<SimRecord> {
        let state = self.state();
        let mut out: Vec<SimRecord> = state
            .products
            .values()
            .filter_map(|p| self.view(p))
            .collect();
        drop(state);
        out.sort_by(|a, b| a.sku.cmp(&b.sku));
        out
    }

    fn record(&self, sku: &str) -> Option<SimRecord> {
        let state = self.state();
        let id = state.id_of(sku)?;
        state.products.get(&id).and_then(|p| self.view(p))
    }

    fn set_offer(&self, sku: &str, offer: Offer) -> bool {
        if offer.price.currency != self.options.currency {
            tracing::warn!(
                sku,
                currency = %offer.price.currency,
                "Simulator refuses an offer outside the company currency."
            );
            return false;
        }
        // Tryton has one list price; a sale price has no place here.
        self.state()
            .edit(sku, |p| p.list_price = Some(offer.price.major_string()))
    }

    fn set_stock(&self, sku: &str, location: &str, quantity: i64) -> bool {
        match self.is_location(location) {
            Some(id) => self.set_quantities(sku, id, quantity as f64, quantity as f64),
            None => false,
        }
    }

    fn remove(&self, sku: &str) -> bool {
        let mut state = self.state();
        match state.by_code.remove(sku) {
            Some(id) => state.products.remove(&id).is_some(),
            None => false,
        }
    }

    fn add(&self, record: SimRecord) {
        let product = self.product_from(&record);
        let mut state = self.state();
        match state.id_of(&record.sku) {
            Some(id) => {
                state.products.insert(id, product);
            }
            None => {
                state.insert(product);
            }
        }
    }

    fn faults(&self) -> &Faults {
        &self.faults
    }

    fn counters(&self) -> &SimCounters {
        &self.counters
    }
}

/// Starts the simulator on `addr` (`127.0.0.1:0` for an ephemeral port): the JSON-RPC API
/// behind the SDK's fault layer, plus the `/__sim` admin API.
pub async fn start(
    addr: SocketAddr,
    options: SimOptions,
) -> std::io::Result<(Arc<Simulator>, SimServer)> {
    let sim = Arc::new(Simulator::new(options));
    let api = Router::new()
        .route("/{database}/rpc/", post(rpc))
        .route("/{database}/", post(legacy_path))
        .route("/rpc/", post(root_rpc))
        .with_state(sim.clone());
    let router = fault_layer(api, sim.clone()).merge(admin_router(sim.clone()));
    let server = SimServer::start(router, addr).await?;
    Ok((sim, server))
}

// ---------------------------------------------------------------------------------------
// HTTP layer

/// What a call produced besides a result.
enum Fail {
    /// A JSON-RPC `error` member (HTTP 200).
    Rpc(Value),
    /// A plain HTTP answer (401, 403, 429…).
    Http(Box<Response>),
}

impl Fail {
    fn user_error(message: String) -> Fail {
        Fail::Rpc(json!(["UserError", [message, "", null]]))
    }
    /// A Python exception that is not a Tryton one: `[str(e), traceback]`.
    fn exception(text: String) -> Fail {
        Fail::Rpc(json!([text, ""]))
    }
    /// A `KeyError` on a name, the way trytond reports an unknown field or model.
    fn key_error(name: &str) -> Fail {
        Fail::exception(format!("'{name}'"))
    }
}

fn html(status: StatusCode, title: &str, text: &str) -> Response {
    let reason = status.canonical_reason().unwrap_or("Error");
    let body = format!(
        "<!doctype html>\n<html lang=en>\n<title>{} {reason}</title>\n<h1>{title}</h1>\n<p>{text}</p>\n",
        status.as_u16()
    );
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

fn unauthorized_session(headers: &HeaderMap) -> Response {
    let mut resp = (
        StatusCode::UNAUTHORIZED,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "",
    )
        .into_response();
    if headers
        .get("x-requested-with")
        .and_then(|v| v.to_str().ok())
        != Some("XMLHttpRequest")
    {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"Tryton\""),
        );
    }
    resp
}

fn not_found() -> Response {
    html(
        StatusCode::NOT_FOUND,
        "Not Found",
        "The requested URL was not found on the server. If you entered the URL manually please check your spelling and try again.",
    )
}

/// A JSON answer, marked (and, if accepted, compressed) the way trytond does it.
fn json_answer(value: &Value, request_headers: &HeaderMap, threshold: usize) -> Response {
    let body = match serde_json::to_vec(value) {
        Ok(b) => b,
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if body.len() <= threshold {
        return (headers, body).into_response();
    }
    // trytond sets this header whether or not it compresses (jsonrpc.py).
    headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    let accepts_gzip = request_headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|e| e.trim().starts_with("gzip")));
    if !accepts_gzip {
        return (headers, body).into_response();
    }
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    match enc.write_all(&body).and_then(|_| enc.finish()) {
        Ok(gz) => (headers, gz).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Parses a trytond JSON-RPC request body: `{"id", "method", "params"}`.
fn parse_request(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(Value, String, Vec<Value>), Box<Response>> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    if !is_json {
        return Err(Box::new(html(
            StatusCode::BAD_REQUEST,
            "Bad Request",
            "Not a JSON request",
        )));
    }
    let bad = || {
        Box::new(html(
            StatusCode::BAD_REQUEST,
            "Bad Request",
            "Unable to read JSON request",
        ))
    };
    let value: Value = serde_json::from_slice(body).map_err(|_| bad())?;
    let object = value.as_object().ok_or_else(bad)?;
    let id = object.get("id").cloned().unwrap_or(json!(0));
    let method = object
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let params = match object.get("params") {
        Some(Value::Array(p)) => p.clone(),
        Some(Value::Null) | None => Vec::new(),
        Some(_) => return Err(bad()),
    };
    Ok((id, method, params))
}

async fn legacy_path() -> Response {
    let mut resp = html(
        StatusCode::METHOD_NOT_ALLOWED,
        "Method Not Allowed",
        "The method is not allowed for the requested URL.",
    );
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("OPTIONS"));
    resp
}

async fn root_rpc(State(sim): State<Arc<Simulator>>, headers: HeaderMap, body: Bytes) -> Response {
    let (id, method, _) = match parse_request(&headers, &body) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    let result = match method.as_str() {
        "common.server.version" => json!("8.0"),
        "common.db.list" => json!([sim.options.database]),
        _ => {
            return html(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal Server Error",
                "The server encountered an internal error and was unable to complete your request.",
            );
        }
    };
    json_answer(
        &json!({"id": id, "result": result}),
        &headers,
        sim.options.gzip_threshold,
    )
}

async fn rpc(
    State(sim): State<Arc<Simulator>>,
    Path(database): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if database != sim.options.database {
        return not_found();
    }
    let (id, method, params) = match parse_request(&headers, &body) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    let outcome = match method.as_str() {
        "common.db.login" => sim.login(&params),
        "common.db.logout" => match sim.authenticate(&headers) {
            Some(token) => {
                if let Some(token) = token {
                    sim.state().sessions.remove(&token);
                }
                Ok(Value::Null)
            }
            None => Err(Fail::Http(Box::new(unauthorized_session(&headers)))),
        },
        _ => match sim.authenticate(&headers) {
            Some(_) => sim.dispatch(&method, params),
            None => Err(Fail::Http(Box::new(unauthorized_session(&headers)))),
        },
    };
    let envelope = match outcome {
        Ok(result) => json!({"id": id, "result": result}),
        Err(Fail::Rpc(error)) => json!({"id": id, "error": error}),
        Err(Fail::Http(resp)) => return *resp,
    };
    json_answer(&envelope, &headers, sim.options.gzip_threshold)
}

impl Simulator {
    fn login(&self, params: &[Value]) -> Result<Value, Fail> {
        let (Some(login), Some(parameters)) = (
            params.first().and_then(Value::as_str),
            params.get(1).and_then(Value::as_object),
        ) else {
            return Err(Fail::exception(
                "login() missing 2 required positional arguments: 'user' and 'parameters'".into(),
            ));
        };
        let mut state = self.state();
        let failed = state.failed_logins.get(login).copied().unwrap_or(0);
        if failed > self.options.max_login_attempts {
            *state.failed_logins.entry(login.to_string()).or_default() += 1;
            drop(state);
            self.counters.throttled();
            return Err(Fail::Http(Box::new(html(
                StatusCode::TOO_MANY_REQUESTS,
                "Too Many Requests",
                "This user has exceeded an allotted request count. Try again later.",
            ))));
        }
        let Some(password) = parameters.get("password") else {
            return Err(Fail::Rpc(json!([
                "LoginException",
                ["password", format!("Password for {login}"), "password"]
            ])));
        };
        if login == self.options.login && password.as_str() == Some(self.options.password.as_str())
        {
            state.failed_logins.remove(login);
            let token: String = rand::random::<[u8; 32]>()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            state.sessions.insert(token.clone(), self.options.user_id);
            drop(state);
            self.logins.fetch_add(1, Ordering::Relaxed);
            Ok(json!([self.options.user_id, token, null]))
        } else {
            *state.failed_logins.entry(login.to_string()).or_default() += 1;
            Err(Fail::Http(Box::new(html(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "The server could not verify that you are authorized to access the URL requested. You either supplied the wrong credentials (e.g. a bad password), or your browser doesn't understand how to supply the credentials required.",
            ))))
        }
    }

    /// `Some(Some(token))` for a valid session, `Some(None)` for valid HTTP Basic
    /// credentials, `None` when not authenticated.
    fn authenticate(&self, headers: &HeaderMap) -> Option<Option<String>> {
        let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
        let (scheme, data) = value.split_once(' ')?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        match scheme.to_ascii_lowercase().as_str() {
            "session" => {
                let mut parts = decoded.splitn(3, ':');
                let (_login, user, token) = (parts.next()?, parts.next()?, parts.next()?);
                let user: i64 = user.parse().ok()?;
                (self.state().sessions.get(token) == Some(&user)).then(|| Some(token.to_string()))
            }
            "basic" => {
                let (login, password) = decoded.split_once(':')?;
                (login == self.options.login && password == self.options.password).then_some(None)
            }
            _ => None,
        }
    }

    fn dispatch(&self, method: &str, mut params: Vec<Value>) -> Result<Value, Fail> {
        let parts: Vec<&str> = method.split('.').collect();
        let (kind, model, name) = match parts.as_slice() {
            [kind, middle @ .., last] if !middle.is_empty() => (*kind, middle.join("."), *last),
            [kind, ..] => (*kind, String::new(), ""),
            [] => ("", String::new(), ""),
        };
        if kind != "model" {
            return Err(Fail::key_error(&model));
        }
        let known: &[&str] = match model.as_str() {
            "product.product" => &["search_read", "search", "search_count", "read"],
            "stock.location" => &["search_read", "read"],
            "company.company" => &["read"],
            _ => return Err(Fail::key_error(&model)),
        };
        if !known.contains(&name) {
            return Err(Fail::Http(Box::new(html(
                StatusCode::FORBIDDEN,
                "Forbidden",
                "You don't have the permission to access the requested resource. It is either read-protected or not readable by the server.",
            ))));
        }
        // trytond takes the context from the last positional parameter.
        let context = match params.pop() {
            Some(Value::Object(c)) => c,
            _ => return Err(Fail::exception("context must be a dictionary".into())),
        };
        let arg = |i: usize| params.get(i).cloned().unwrap_or(Value::Null);
        match (model.as_str(), name) {
            ("product.product", "search_read") => {
                let q = Query::parse(&arg(0), &arg(1), &arg(2), &arg(3))?;
                self.product_search_read(&q, &arg(4), &context)
            }
            ("product.product", "search") => {
                let q = Query::parse(&arg(0), &arg(1), &arg(2), &arg(3))?;
                let state = self.state();
                let ids = product_search(&state, &q, &context)?;
                Ok(json!(ids))
            }
            ("product.product", "search_count") => {
                let q = Query::parse(&arg(0), &arg(1), &arg(2), &Value::Null)?;
                let state = self.state();
                let ids = product_search(&state, &q, &context)?;
                Ok(json!(ids.len()))
            }
            ("product.product", "read") => {
                let ids = id_list(&arg(0))?;
                let state = self.state();
                let missing: Vec<String> = ids
                    .iter()
                    .filter(|id| !state.products.contains_key(id))
                    .map(i64::to_string)
                    .collect();
                if !missing.is_empty() {
                    return Err(missing_records(&missing, "Variant"));
                }
                let fields = product_fields(&arg(1))?;
                ids.iter()
                    .filter_map(|id| state.products.get(id).map(|p| (*id, p)))
                    .map(|(id, p)| self.product_row(id, p, &fields, &context))
                    .collect::<Result<Vec<_>, _>>()
                    .map(Value::Array)
            }
            ("stock.location", "read") => {
                let ids = id_list(&arg(0))?;
                let missing: Vec<String> = ids
                    .iter()
                    .filter(|id| !self.options.locations.iter().any(|l| l.id == **id))
                    .map(i64::to_string)
                    .collect();
                if !missing.is_empty() {
                    return Err(missing_records(&missing, "Stock Location"));
                }
                let fields = field_list(&arg(1), &["id", "name", "code", "type"]);
                ids.iter()
                    .filter_map(|id| self.options.locations.iter().find(|l| l.id == *id))
                    .map(|l| location_row(l, &fields))
                    .collect::<Result<Vec<_>, _>>()
                    .map(Value::Array)
            }
            ("stock.location", "search_read") => {
                let q = Query::parse(&arg(0), &arg(1), &arg(2), &Value::Null)?;
                let fields = field_list(&arg(4), &["id", "name", "code", "type"]);
                let mut rows = Vec::new();
                for l in &self.options.locations {
                    let get = |f: &str| location_value(l, f);
                    if q.domain.matches(&get)? {
                        rows.push(location_row(l, &fields)?);
                    }
                }
                Ok(Value::Array(q.window(rows)))
            }
            ("company.company", "read") => {
                let ids = id_list(&arg(0))?;
                if let Some(bad) = ids.iter().find(|id| **id != self.options.company) {
                    return Err(missing_records(&[bad.to_string()], "Company"));
                }
                let fields = field_list(&arg(1), &["id", "rec_name", "currency"]);
                ids.iter()
                    .map(|_| self.company_row(&fields))
                    .collect::<Result<Vec<_>, _>>()
                    .map(Value::Array)
            }
            _ => Err(Fail::key_error(&model)),
        }
    }

    fn product_search_read(
        &self,
        q: &Query,
        fields: &Value,
        context: &Map<String, Value>,
    ) -> Result<Value, Fail> {
        let fields = product_fields(fields)?;
        let state = self.state();
        let ids = product_search(&state, q, context)?;
        let rows = ids
            .iter()
            .filter_map(|id| state.products.get(id).map(|p| (*id, p)))
            .map(|(id, p)| self.product_row(id, p, &fields, context))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Value::Array(rows))
    }

    fn product_row(
        &self,
        id: i64,
        p: &SimProduct,
        fields: &[String],
        context: &Map<String, Value>,
    ) -> Result<Value, Fail> {
        let company_ok =
            context.get("company").and_then(Value::as_i64) == Some(self.options.company);
        let locations: Vec<i64> = context
            .get("locations")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_i64).collect())
            .unwrap_or_default();
        let mut row = Map::new();
        row.insert("id".into(), json!(id));
        for f in fields {
            let value = match f.as_str() {
                "id" => continue,
                "list_price" | "list_price_used" => match (&p.list_price, company_ok) {
                    (Some(price), true) => json!({"__class__": "Decimal", "decimal": price}),
                    _ => Value::Null,
                },
                "quantity" | "forecast_quantity" => {
                    let forecast = f == "forecast_quantity";
                    let total: f64 = locations
                        .iter()
                        .filter_map(|l| p.stock.get(l))
                        .map(|(q, fq)| if forecast { *fq } else { *q })
                        .sum();
                    json!(total)
                }
                other => product_value(id, p, other).ok_or_else(|| Fail::key_error(other))?,
            };
            row.insert(f.clone(), value);
        }
        Ok(Value::Object(row))
    }

    fn company_row(&self, fields: &[String]) -> Result<Value, Fail> {
        let mut row = Map::new();
        row.insert("id".into(), json!(self.options.company));
        let mut currency = Map::new();
        for f in fields {
            match f.as_str() {
                "id" => {}
                "rec_name" | "name" => {
                    row.insert(f.clone(), json!(self.options.company_name));
                }
                "currency" => {
                    row.insert(f.clone(), json!(1));
                }
                dotted if dotted.starts_with("currency.") => {
                    let sub = &dotted["currency.".len()..];
                    let v = match sub {
                        "code" | "name" | "symbol" => json!(self.options.currency.code()),
                        "id" => json!(1),
                        other => return Err(Fail::key_error(other)),
                    };
                    currency.insert("id".into(), json!(1));
                    currency.insert(sub.to_string(), v);
                }
                other => return Err(Fail::key_error(other)),
            }
        }
        if !currency.is_empty() {
            row.insert("currency.".into(), Value::Object(currency));
        }
        Ok(Value::Object(row))
    }
}

fn missing_records(ids: &[String], model: &str) -> Fail {
    Fail::user_error(format!(
        "You are trying to read records \"{}\" of \"{model}\" that don't exist.",
        ids.join(", ")
    ))
}

fn id_list(v: &Value) -> Result<Vec<i64>, Fail> {
    match v {
        Value::Array(a) => a
            .iter()
            .map(|x| {
                x.as_i64()
                    .ok_or_else(|| Fail::exception(format!("invalid id {x}")))
            })
            .collect(),
        Value::Number(n) => n
            .as_i64()
            .map(|i| vec![i])
            .ok_or_else(|| Fail::exception(format!("invalid id {n}"))),
        other => Err(Fail::exception(format!("invalid ids {other}"))),
    }
}

fn field_list(v: &Value, default: &[&str]) -> Vec<String> {
    match v.as_array() {
        Some(a) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        None => default.iter().map(|s| s.to_string()).collect(),
    }
}

fn product_fields(v: &Value) -> Result<Vec<String>, Fail> {
    Ok(field_list(
        v,
        &[
            "id",
            "code",
            "name",
            "rec_name",
            "active",
            "list_price",
            "list_price_used",
        ],
    ))
}

/// A product's plain (context-free) field value; `None` for an unknown field.
fn product_value(id: i64, p: &SimProduct, field: &str) -> Option<Value> {
    Some(match field {
        "id" => json!(id),
        "code" => json!(p.code),
        "name" => json!(p.name),
        "rec_name" => match &p.code {
            Some(c) => json!(format!("[{c}] {}", p.name)),
            None => json!(p.name),
        },
        "active" => json!(p.active),
        _ => return None,
    })
}

fn location_value(l: &SimLocation, field: &str) -> Option<Value> {
    Some(match field {
        "id" => json!(l.id),
        "name" => json!(l.name),
        "code" => json!(l.code),
        "type" => json!(l.kind),
        "rec_name" => json!(format!("[{}] {}", l.code, l.name)),
        "active" => json!(true),
        "parent" => Value::Null,
        _ => return None,
    })
}

fn location_row(l: &SimLocation, fields: &[String]) -> Result<Value, Fail> {
    let mut row = Map::new();
    row.insert("id".into(), json!(l.id));
    for f in fields {
        let v = location_value(l, f).ok_or_else(|| Fail::key_error(f))?;
        row.insert(f.clone(), v);
    }
    Ok(Value::Object(row))
}

// ---------------------------------------------------------------------------------------
// Domains and searches

/// A parsed Tryton domain.
#[derive(Debug, Clone)]
enum Domain {
    And(Vec<Domain>),
    Or(Vec<Domain>),
    Clause {
        field: String,
        op: String,
        value: Value,
    },
}

impl Domain {
    fn parse(v: &Value) -> Result<Domain, Fail> {
        let bad = || Fail::exception(format!("invalid domain {v}"));
        let items = match v {
            Value::Null => return Ok(Domain::And(Vec::new())),
            Value::Array(a) => a,
            _ => return Err(bad()),
        };
        // A clause is [field, operator, value]; a domain is a list of clauses/domains.
        if let (Some(Value::String(field)), Some(Value::String(op))) = (items.first(), items.get(1))
            && items.len() >= 3
            && field != "AND"
            && field != "OR"
        {
            return Ok(Domain::Clause {
                field: field.clone(),
                op: op.to_lowercase(),
                value: items[2].clone(),
            });
        }
        let (or, rest) = match items.first() {
            Some(Value::String(s)) if s == "OR" => (true, &items[1..]),
            Some(Value::String(s)) if s == "AND" => (false, &items[1..]),
            _ => (false, &items[..]),
        };
        let parts = rest
            .iter()
            .map(Domain::parse)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(if or {
            Domain::Or(parts)
        } else {
            Domain::And(parts)
        })
    }

    /// Top-level AND clauses (for index selection).
    fn top_clauses(&self) -> Vec<(&str, &str, &Value)> {
        match self {
            Domain::Clause { field, op, value } => vec![(field, op, value)],
            Domain::And(parts) => parts
                .iter()
                .filter_map(|p| match p {
                    Domain::Clause { field, op, value } => {
                        Some((field.as_str(), op.as_str(), value))
                    }
                    _ => None,
                })
                .collect(),
            Domain::Or(_) => Vec::new(),
        }
    }

    fn mentions(&self, name: &str) -> bool {
        match self {
            Domain::Clause { field, .. } => field == name,
            Domain::And(p) | Domain::Or(p) => p.iter().any(|d| d.mentions(name)),
        }
    }

    fn matches(&self, get: &dyn Fn(&str) -> Option<Value>) -> Result<bool, Fail> {
        match self {
            Domain::And(parts) => {
                for p in parts {
                    if !p.matches(get)? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            Domain::Or(parts) => {
                for p in parts {
                    if p.matches(get)? {
                        return Ok(true);
                    }
                }
                Ok(parts.is_empty())
            }
            Domain::Clause { field, op, value } => {
                let actual = get(field).ok_or_else(|| Fail::key_error(field))?;
                compare(&actual, op, value)
            }
        }
    }
}

fn compare(actual: &Value, op: &str, expected: &Value) -> Result<bool, Fail> {
    use std::cmp::Ordering as O;
    let order = || -> Option<O> {
        match (actual, expected) {
            (Value::Number(a), Value::Number(b)) => a.as_f64()?.partial_cmp(&b.as_f64()?),
            (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
            _ => None,
        }
    };
    let equal = |a: &Value, b: &Value| match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Bool(x), Value::Number(y)) | (Value::Number(y), Value::Bool(x)) => {
            y.as_i64() == Some(i64::from(*x))
        }
        _ => a == b,
    };
    Ok(match op {
        "=" => equal(actual, expected),
        "!=" => !equal(actual, expected),
        "<" => order() == Some(O::Less),
        "<=" => matches!(order(), Some(O::Less | O::Equal)),
        ">" => order() == Some(O::Greater),
        ">=" => matches!(order(), Some(O::Greater | O::Equal)),
        "in" | "not in" => {
            let list = expected
                .as_array()
                .ok_or_else(|| Fail::exception(format!("operator {op} needs a list")))?;
            let found = list.iter().any(|v| equal(actual, v));
            if op == "in" { found } else { !found }
        }
        "like" | "ilike" | "not like" | "not ilike" => {
            let (Some(text), Some(pattern)) = (actual.as_str(), expected.as_str()) else {
                return Ok(op.starts_with("not"));
            };
            let insensitive = op.ends_with("ilike");
            let hit = if insensitive {
                like(&text.to_lowercase(), &pattern.to_lowercase())
            } else {
                like(text, pattern)
            };
            if op.starts_with("not") { !hit } else { hit }
        }
        other => return Err(Fail::exception(format!("unsupported operator {other:?}"))),
    })
}

/// SQL `LIKE` with `%` and `_`.
fn like(text: &str, pattern: &str) -> bool {
    let t: Vec<char> = text.chars().collect();
    let p: Vec<char> = pattern.chars().collect();
    // Classic wildcard matching with backtracking on the last `%`.
    let (mut ti, mut pi) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '_' || p[pi] == t[ti]) {
            ti += 1;
            pi += 1;
        } else if pi < p.len() && p[pi] == '%' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '%' {
        pi += 1;
    }
    pi == p.len()
}

/// A search: domain, window and order.
struct Query {
    domain: Domain,
    offset: usize,
    limit: Option<usize>,
    /// `(field, descending)`; empty = the default order.
    order: Vec<(String, bool)>,
}

impl Query {
    fn parse(domain: &Value, offset: &Value, limit: &Value, order: &Value) -> Result<Query, Fail> {
        let domain = Domain::parse(domain)?;
        let offset = offset.as_u64().unwrap_or(0) as usize;
        let limit = limit.as_u64().map(|l| l as usize);
        let mut parsed = Vec::new();
        if let Some(items) = order.as_array() {
            for item in items {
                let field = item.get(0).and_then(Value::as_str).unwrap_or_default();
                let dir = item.get(1).and_then(Value::as_str).unwrap_or("ASC");
                parsed.push((
                    field.to_string(),
                    dir.to_ascii_uppercase().starts_with("DESC"),
                ));
            }
        }
        Ok(Query {
            domain,
            offset,
            limit,
            order: parsed,
        })
    }

    fn window<T>(&self, rows: Vec<T>) -> Vec<T> {
        let it = rows.into_iter().skip(self.offset);
        match self.limit {
            Some(l) => it.take(l).collect(),
            None => it.collect(),
        }
    }
}

/// Product ids matching `q`, ordered and windowed. Uses the id order of the map or the code
/// index so a page costs O(page), not O(catalog).
fn product_search(
    state: &StateInner,
    q: &Query,
    context: &Map<String, Value>,
) -> Result<Vec<i64>, Fail> {
    let active_test =
        context.get("active_test") != Some(&Value::Bool(false)) && !q.domain.mentions("active");
    let keep = |id: i64, p: &SimProduct| -> Result<bool, Fail> {
        if active_test && !p.active {
            return Ok(false);
        }
        q.domain.matches(&|f: &str| product_value(id, p, f))
    };
    for (field, _) in &q.order {
        if !matches!(field.as_str(), "id" | "code" | "name") {
            return Err(Fail::key_error(field));
        }
    }
    let by_id_asc = matches!(q.order.as_slice(), [(f, false)] if f == "id");

    // Candidate ids from an index when a top-level clause allows it.
    let mut candidates: Option<Vec<i64>> = None;
    let mut lower = Bound::Unbounded;
    for (field, op, value) in q.domain.top_clauses() {
        match (field, op) {
            ("id", "in") => {
                let ids = value
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_i64).collect());
                candidates = candidates.or(ids);
            }
            ("id", "=") => candidates = candidates.or(value.as_i64().map(|i| vec![i])),
            ("code", "in") => {
                let ids = value.as_array().map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .filter_map(|c| state.by_code.get(c).copied())
                        .collect()
                });
                candidates = candidates.or(ids);
            }
            ("code", "=") => {
                let ids = value
                    .as_str()
                    .map(|c| state.by_code.get(c).copied().into_iter().collect());
                candidates = candidates.or(ids);
            }
            ("id", ">") => {
                if let Some(v) = value.as_i64() {
                    lower = Bound::Excluded(v);
                }
            }
            ("id", ">=") => {
                if let Some(v) = value.as_i64() {
                    lower = Bound::Included(v);
                }
            }
            _ => {}
        }
    }

    let mut ids: Vec<i64> = Vec::new();
    match candidates {
        Some(mut c) => {
            c.sort_unstable();
            c.dedup();
            for id in c {
                if let Some(p) = state.products.get(&id)
                    && keep(id, p)?
                {
                    ids.push(id);
                }
            }
        }
        None if by_id_asc => {
            // Ordered walk with early stop: O(offset + limit).
            let want = q.limit.map(|l| l + q.offset);
            for (&id, p) in state.products.range((lower, Bound::Unbounded)) {
                if want.is_some_and(|w| ids.len() >= w) {
                    break;
                }
                if keep(id, p)? {
                    ids.push(id);
                }
            }
        }
        None => {
            for (&id, p) in state.products.range((lower, Bound::Unbounded)) {
                if keep(id, p)? {
                    ids.push(id);
                }
            }
        }
    }

    // Order (ids are ascending here); the default order is by code, then id.
    let order: Vec<(String, bool)> = if q.order.is_empty() {
        vec![("code".to_string(), false), ("id".to_string(), false)]
    } else {
        q.order.clone()
    };
    if !by_id_asc {
        let key = |id: &i64, field: &str| -> Value {
            state
                .products
                .get(id)
                .and_then(|p| product_value(*id, p, field))
                .unwrap_or(Value::Null)
        };
        ids.sort_by(|a, b| {
            for (field, desc) in &order {
                let (ka, kb) = (key(a, field), key(b, field));
                let ord = match (&ka, &kb) {
                    (Value::Number(x), Value::Number(y)) => x
                        .as_f64()
                        .partial_cmp(&y.as_f64())
                        .unwrap_or(std::cmp::Ordering::Equal),
                    (Value::String(x), Value::String(y)) => x.cmp(y),
                    (Value::Null, Value::Null) => std::cmp::Ordering::Equal,
                    // trytond sorts NULLs last in ascending order.
                    (Value::Null, _) => std::cmp::Ordering::Greater,
                    (_, Value::Null) => std::cmp::Ordering::Less,
                    _ => std::cmp::Ordering::Equal,
                };
                let ord = if *desc { ord.reverse() } else { ord };
                if ord != std::cmp::Ordering::Equal {
                    return ord;
                }
            }
            std::cmp::Ordering::Equal
        });
    }
    Ok(q.window(ids))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns() {
        assert!(like("SHIRT-M", "SHIRT-%"));
        assert!(like("SHIRT-M", "%M"));
        assert!(like("SHIRT-M", "SHIRT-_"));
        assert!(!like("SHIRT-M", "SHIRT-"));
        assert!(like("abc", "%"));
        assert!(like("", "%"));
        assert!(!like("abc", "a_"));
    }

    #[test]
    fn domains() {
        let d = Domain::parse(&json!([
            ["id", ">", 5],
            ["OR", ["code", "=", "A"], ["code", "like", "B%"]]
        ]))
        .unwrap_or_else(|_| panic!("domain parses"));
        let get = |id: i64, code: &'static str| {
            move |f: &str| match f {
                "id" => Some(json!(id)),
                "code" => Some(json!(code)),
                _ => None,
            }
        };
        assert!(matches!(d.matches(&get(6, "A")), Ok(true)));
        assert!(matches!(d.matches(&get(6, "Bx")), Ok(true)));
        assert!(matches!(d.matches(&get(6, "C")), Ok(false)));
        assert!(matches!(d.matches(&get(5, "A")), Ok(false)));
        let d = Domain::parse(&json!([["nosuch", "=", 1]])).unwrap_or_else(|_| panic!("parses"));
        assert!(matches!(d.matches(&get(1, "A")), Err(Fail::Rpc(_))));
    }

    #[test]
    fn seeding_maps_locations_and_prices() {
        let sim = Simulator::new(SimOptions::default());
        sim.seed(vec![SimRecord {
            sku: "A".into(),
            title: "Alpha".into(),
            offer: Offer::regular(Money::new(19900, Currency::NOK)),
            stock: [("3".to_string(), 4), ("99".to_string(), 1)]
                .into_iter()
                .collect(),
        }]);
        let r = sim.records();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].offer.price.minor, 19900);
        assert_eq!(r[0].stock.get("3"), Some(&4));
        assert_eq!(r[0].stock.get("7"), Some(&0));
        assert_eq!(r[0].stock.get("99"), None);
        assert!(sim.set_stock("A", "11", 9));
        assert!(!sim.set_stock("A", "99", 9));
        assert!(!sim.set_offer("A", Offer::regular(Money::new(1, Currency::EUR))));
    }
}
