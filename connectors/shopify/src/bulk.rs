//! Full snapshots through Shopify bulk operations: start `bulkOperationRunQuery`, poll the
//! operation with `node(id:)` until it is done (the one place this connector waits on its
//! own: the API is asynchronous), download the JSONL result from the signed `url` (without
//! the access token, which never leaves for the storage host), and rebuild records from
//! variant lines and their `__parentId` inventory-level lines.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use omnisync_sdk::http::HttpClient;
use omnisync_sdk::{ConnectorError, Currency, ErrorKind, Record};
use serde::Deserialize;
use serde_json::Value;

use crate::graphql::{Gql, short};
use crate::mapping::{LevelNode, VariantNode, variant_to_record};

/// The bulk query: every variant with prices, ids and its inventory levels' `available`
/// quantity. Two connections, nesting depth two (Shopify allows five and two).
pub const BULK_QUERY: &str = r#"{
  productVariants {
    edges {
      node {
        id sku barcode displayName price compareAtPrice
        product { id }
        inventoryItem {
          id tracked
          inventoryLevels {
            edges { node { location { id } quantities(names: ["available"]) { name quantity } } }
          }
        }
      }
    }
  }
}"#;

const RUN: &str = "mutation RunBulkQuery($query: String!) { bulkOperationRunQuery(query: $query) { bulkOperation { id status } userErrors { field message code } } }";

const POLL: &str = "query PollBulkOperation($id: ID!) { node(id: $id) { ... on BulkOperation { id status errorCode objectCount url partialDataUrl } } }";

/// A bulk operation as polled.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BulkOperation {
    /// Its gid.
    pub id: String,
    /// `CREATED`, `RUNNING`, `COMPLETED`, `FAILED`, `CANCELING`, `CANCELED`, `EXPIRED`.
    pub status: String,
    /// Why it failed (`ACCESS_DENIED`, `INTERNAL_SERVER_ERROR`, `TIMEOUT`).
    #[serde(default)]
    pub error_code: Option<String>,
    /// Objects written (an `UnsignedInt64`, sent as a string).
    #[serde(default)]
    pub object_count: Option<Value>,
    /// The signed result URL; `null` when there are no results.
    #[serde(default)]
    pub url: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UserError {
    #[serde(default)]
    message: String,
    #[serde(default)]
    code: Option<String>,
}

/// Starts the bulk query; returns the operation's gid.
pub async fn start(gql: &Gql) -> Result<String, ConnectorError> {
    let what = "bulkOperationRunQuery";
    let answer = gql
        .run(what, 10, RUN, serde_json::json!({ "query": BULK_QUERY }))
        .await?;
    let payload = answer
        .data
        .get("bulkOperationRunQuery")
        .filter(|p| p.is_object())
        .ok_or_else(|| protocol(gql, what, &answer.data))?;
    let errors: Vec<UserError> = payload
        .get("userErrors")
        .map(|v| serde_json::from_value(v.clone()))
        .transpose()
        .map_err(|_| protocol(gql, what, payload))?
        .unwrap_or_default();
    if let Some(e) = errors.first() {
        let message = format!(
            "{}: {}",
            e.code.as_deref().unwrap_or("USER_ERROR"),
            e.message
        );
        // Another bulk query still running (or the concurrency limit) clears by itself.
        return Err(match e.code.as_deref() {
            Some("OPERATION_IN_PROGRESS" | "LIMIT_REACHED") => {
                ConnectorError::transient(gql.operation(what), message)
            }
            _ => ConnectorError::permanent(gql.operation(what), message),
        });
    }
    payload
        .pointer("/bulkOperation/id")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| protocol(gql, what, payload))
}

/// Reads the operation's current state.
pub async fn fetch(gql: &Gql, id: &str) -> Result<BulkOperation, ConnectorError> {
    let what = "node(BulkOperation)";
    let answer = gql
        .run(what, 1, POLL, serde_json::json!({ "id": id }))
        .await?;
    let node = answer
        .data
        .get("node")
        .filter(|n| n.is_object())
        .ok_or_else(|| {
            ConnectorError::permanent(
                gql.operation(what),
                format!("bulk operation {id} not found (results are kept seven days)"),
            )
        })?;
    serde_json::from_value(node.clone()).map_err(|_| protocol(gql, what, node))
}

/// Polls until the operation is done, every `interval`, for at most `timeout`.
pub async fn wait(
    gql: &Gql,
    id: &str,
    interval: Duration,
    timeout: Duration,
) -> Result<BulkOperation, ConnectorError> {
    let started = Instant::now();
    loop {
        let op = fetch(gql, id).await?;
        match op.status.as_str() {
            "COMPLETED" => return Ok(op),
            "CREATED" | "RUNNING" => {}
            other => return Err(failed(gql, &op, other)),
        }
        if started.elapsed() >= timeout {
            return Err(ConnectorError::transient(
                gql.operation("node(BulkOperation)"),
                format!(
                    "bulk operation {id} still {} after {}s (bulk_timeout_secs)",
                    op.status,
                    timeout.as_secs()
                ),
            ));
        }
        tokio::time::sleep(interval).await;
    }
}

fn failed(gql: &Gql, op: &BulkOperation, status: &str) -> ConnectorError {
    let what = gql.operation("node(BulkOperation)");
    let code = op.error_code.as_deref().unwrap_or("none");
    let message = format!("bulk operation {} ended {status} (errorCode {code})", op.id);
    match (status, op.error_code.as_deref()) {
        ("FAILED", Some("ACCESS_DENIED")) => ConnectorError::new(ErrorKind::Auth, what, message),
        ("FAILED", Some("INTERNAL_SERVER_ERROR" | "TIMEOUT"))
        | ("CANCELED" | "CANCELING" | "EXPIRED", _) => ConnectorError::transient(what, message),
        _ => ConnectorError::permanent(what, message),
    }
}

/// Downloads the result file. The URL is a signed storage URL: no access token is sent,
/// and neither the URL nor its signature appears in errors.
pub async fn download(
    client: &HttpClient,
    url: &str,
    timeout: Duration,
) -> Result<bytes::Bytes, ConnectorError> {
    let operation = "GET bulk operation result";
    let request = client.raw().get(url).timeout(timeout);
    match client.send(operation, request).await {
        Ok((_, _, body)) => Ok(body),
        Err(mut err) => {
            // A refused or vanished signed URL is not our credentials' fault: start a new read.
            if err.kind == ErrorKind::Auth || matches!(err.status, Some(404 | 410)) {
                err.kind = ErrorKind::Transient;
            }
            Err(err)
        }
    }
}

/// Rebuilds records from the JSONL result. A line that cannot be read is skipped with a
/// warning naming the line; a file with no readable variant line but unreadable ones is a
/// protocol error.
pub fn parse_jsonl(body: &[u8], currency: Currency) -> Result<Vec<Record>, ConnectorError> {
    let operation = "parsing bulk operation result";
    let text = std::str::from_utf8(body)
        .map_err(|e| ConnectorError::protocol(operation, format!("result is not UTF-8: {e}")))?;
    let mut variants: Vec<VariantNode> = Vec::new();
    let mut children: HashMap<String, Vec<LevelNode>> = HashMap::new();
    let mut bad_lines = 0usize;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let value: Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => {
                bad_lines += 1;
                tracing::warn!(line = n + 1, error = %e, "unreadable line in shopify bulk result; skipped");
                continue;
            }
        };
        if let Some(parent) = value.get("__parentId").and_then(Value::as_str) {
            let parent = parent.to_string();
            match serde_json::from_value::<LevelNode>(value) {
                Ok(level) => children.entry(parent).or_default().push(level),
                Err(e) => {
                    bad_lines += 1;
                    tracing::warn!(line = n + 1, %parent, error = %e, "unreadable inventory level in shopify bulk result; skipped");
                }
            }
            continue;
        }
        let id = value
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("(no id)")
            .to_string();
        match serde_json::from_value::<VariantNode>(value) {
            Ok(v) => variants.push(v),
            Err(e) => {
                bad_lines += 1;
                tracing::warn!(line = n + 1, variant = %id, error = %e, "unreadable variant in shopify bulk result; skipped");
            }
        }
    }
    if variants.is_empty() && bad_lines > 0 {
        return Err(ConnectorError::protocol(
            operation,
            format!("no readable variant line ({bad_lines} unreadable lines)"),
        ));
    }
    let mut records = Vec::with_capacity(variants.len());
    for v in &variants {
        // `__parentId` names the nearest enclosing node: the variant (accept the inventory
        // item too, in case a version nests it differently).
        let mut levels = children.remove(&v.id).unwrap_or_default();
        if let Some(item) = &v.inventory_item
            && let Some(more) = children.remove(&item.id)
        {
            levels.extend(more);
        }
        records.push(variant_to_record(v, &levels, currency));
    }
    if !children.is_empty() {
        tracing::warn!(
            parents = children.len(),
            "shopify bulk result has inventory levels whose parent variant is missing; skipped"
        );
    }
    Ok(records)
}

fn protocol(gql: &Gql, what: &str, got: &Value) -> ConnectorError {
    ConnectorError::protocol(
        gql.operation(what),
        format!("unexpected answer shape: {}", short(got)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rebuilds_records_from_parent_and_child_lines() {
        let jsonl = concat!(
            r#"{"id":"gid://shopify/ProductVariant/1","sku":"A","price":"10.00","compareAtPrice":null,"product":{"id":"gid://shopify/Product/1"},"inventoryItem":{"id":"gid://shopify/InventoryItem/1","tracked":true}}"#,
            "\n",
            r#"{"location":{"id":"gid://shopify/Location/1"},"quantities":[{"name":"available","quantity":4}],"__parentId":"gid://shopify/ProductVariant/1"}"#,
            "\n",
            "not json\n",
            r#"{"id":"gid://shopify/ProductVariant/2","sku":"B","price":"oops","product":{"id":"gid://shopify/Product/1"},"inventoryItem":{"id":"gid://shopify/InventoryItem/2","tracked":true}}"#,
            "\n",
            r#"{"location":{"id":"gid://shopify/Location/2"},"quantities":[{"name":"available","quantity":2}],"__parentId":"gid://shopify/InventoryItem/2"}"#,
            "\n",
            r#"{"location":{"id":"gid://shopify/Location/1"},"quantities":[{"name":"available","quantity":9}],"__parentId":"gid://shopify/ProductVariant/99"}"#,
            "\n",
        );
        let records = parse_jsonl(jsonl.as_bytes(), Currency::NOK).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].stock.len(), 1);
        assert_eq!(records[0].stock[0].available, 4);
        assert!(records[0].offer.is_some());
        assert_eq!(records[1].offer, None, "bad price → no offer, record kept");
        assert_eq!(records[1].stock[0].location, "gid://shopify/Location/2");
    }

    #[test]
    fn garbage_is_a_protocol_error() {
        let e = parse_jsonl(b"<html>oops</html>\n", Currency::NOK).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Protocol);
        assert!(parse_jsonl(b"", Currency::NOK).unwrap().is_empty());
    }
}
