//! The slice of the Shopify Admin GraphQL schema the simulator serves, on `async-graphql`:
//! `productVariants` (cursor paging, `query:` search), `shop`, `node`,
//! `currentBulkOperation`, and the mutations `inventorySetQuantities` (with the
//! `@idempotent` directive and `changeFromQuantity` compare-and-set),
//! `productVariantsBulkUpdate` and `bulkOperationRunQuery`.
//!
//! Field complexities follow Shopify's cost rules (objects 1, scalars 0, connections
//! 2 + first × node cost, mutations 10), so the engine's computed complexity is the
//! `requestedQueryCost` the cost extension charges against the leaky bucket.

use std::collections::HashSet;
use std::sync::Arc;

use async_graphql::{
    ComplexObject, Context, CustomDirective, Directive, EmptySubscription, Enum, Error,
    ErrorExtensions, ID, InputObject, InputValueError, InputValueResult, Interface, MaybeUndefined,
    Object, ResolveFut, Result, Scalar, ScalarType, Schema, ServerResult, SimpleObject, Value,
};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use omnisync_sdk::Money as SdkMoney;

use super::catalog::{Catalog, Filter, Variant, gid, parse_gid};
use super::{RequestInfo, Shared};
use crate::settings::idempotency_mandatory;

/// The simulator's schema type.
pub type SimSchema = Schema<QueryRoot, MutationRoot, EmptySubscription>;

/// Builds the schema over the shared state.
pub fn build(shared: Arc<Shared>) -> SimSchema {
    Schema::build(QueryRoot, MutationRoot, EmptySubscription)
        .data(shared)
        .directive(idempotent)
        .extension(super::cost::CostExtensionFactory)
        .finish()
}

/// Reasons `inventorySetQuantities` accepts (Shopify's documented list of inventory
/// adjustment reasons).
const REASONS: &[&str] = &[
    "correction",
    "cycle_count_available",
    "damaged",
    "movement_canceled",
    "movement_created",
    "movement_received",
    "movement_updated",
    "other",
    "promotion",
    "quality_control",
    "received",
    "reservation_created",
    "reservation_deleted",
    "reservation_updated",
    "restock",
    "safety_stock",
    "shrinkage",
];

/// Shopify's `Money` scalar: a decimal amount sent as a string, e.g. `"29.99"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Money(pub String);

#[Scalar(name = "Money")]
impl ScalarType for Money {
    fn parse(value: Value) -> InputValueResult<Self> {
        match value {
            Value::String(s) => Ok(Money(s)),
            Value::Number(n) => Ok(Money(n.to_string())),
            other => Err(InputValueError::expected_type(other)),
        }
    }

    fn to_value(&self) -> Value {
        Value::String(self.0.clone())
    }
}

/// Shopify's `UnsignedInt64` scalar, sent as a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnsignedInt64(pub u64);

#[Scalar(name = "UnsignedInt64")]
impl ScalarType for UnsignedInt64 {
    fn parse(value: Value) -> InputValueResult<Self> {
        match &value {
            Value::String(s) => s
                .parse()
                .map(UnsignedInt64)
                .map_err(|_| InputValueError::expected_type(value)),
            Value::Number(n) => n
                .as_u64()
                .map(UnsignedInt64)
                .ok_or_else(|| InputValueError::expected_type(value)),
            _ => Err(InputValueError::expected_type(value)),
        }
    }

    fn to_value(&self) -> Value {
        Value::String(self.0.to_string())
    }
}

fn coded(message: impl Into<String>, code: &'static str) -> Error {
    Error::new(message).extend_with(|_, e| e.set("code", code))
}

fn shared<'a>(ctx: &Context<'a>) -> Result<&'a Arc<Shared>> {
    ctx.data::<Arc<Shared>>()
}

fn request<'a>(ctx: &Context<'a>) -> Result<&'a Arc<RequestInfo>> {
    ctx.data::<Arc<RequestInfo>>()
}

// ---------------------------------------------------------------- directive

struct IdempotentDirective {
    key: String,
}

#[async_trait::async_trait]
impl CustomDirective for IdempotentDirective {
    async fn resolve_field(
        &self,
        ctx: &Context<'_>,
        resolve: ResolveFut<'_>,
    ) -> ServerResult<Option<Value>> {
        if let Ok(info) = ctx.data::<Arc<RequestInfo>>() {
            info.set_idempotency_key(self.key.clone());
        }
        resolve.await
    }
}

/// `@idempotent(key: String!)` on a mutation field.
#[Directive(location = "Field")]
fn idempotent(key: String) -> impl CustomDirective {
    IdempotentDirective { key }
}

// ---------------------------------------------------------------- objects

/// `PageInfo`.
#[derive(SimpleObject, Clone, Default)]
pub struct PageInfo {
    has_next_page: bool,
    has_previous_page: bool,
    start_cursor: Option<String>,
    end_cursor: Option<String>,
}

/// `Product` (ids only).
#[derive(SimpleObject, Clone)]
pub struct Product {
    #[graphql(complexity = 0)]
    id: ID,
    #[graphql(complexity = 0)]
    title: String,
}

/// `Location`.
#[derive(SimpleObject, Clone)]
pub struct Location {
    #[graphql(complexity = 0)]
    id: ID,
    #[graphql(complexity = 0)]
    name: String,
}

/// `InventoryQuantity`.
#[derive(SimpleObject, Clone)]
pub struct InventoryQuantity {
    #[graphql(complexity = 0)]
    name: String,
    #[graphql(complexity = 0)]
    quantity: i32,
}

/// `InventoryLevel`.
#[derive(SimpleObject, Clone)]
#[graphql(complex)]
pub struct InventoryLevel {
    #[graphql(complexity = 0)]
    id: ID,
    location: Location,
    #[graphql(skip)]
    available: i64,
}

#[ComplexObject]
impl InventoryLevel {
    /// The named quantities.
    async fn quantities(&self, names: Vec<String>) -> Vec<InventoryQuantity> {
        names
            .into_iter()
            .map(|name| {
                let quantity = match name.as_str() {
                    "available" | "on_hand" => self.available,
                    _ => 0,
                };
                InventoryQuantity {
                    name,
                    quantity: i32::try_from(quantity).unwrap_or(i32::MAX),
                }
            })
            .collect()
    }
}

/// `InventoryLevelEdge`.
#[derive(SimpleObject, Clone)]
pub struct InventoryLevelEdge {
    #[graphql(complexity = 0)]
    cursor: String,
    node: InventoryLevel,
}

/// `InventoryLevelConnection`.
#[derive(SimpleObject, Clone)]
pub struct InventoryLevelConnection {
    nodes: Vec<InventoryLevel>,
    #[graphql(complexity = "child_complexity")]
    edges: Vec<InventoryLevelEdge>,
    #[graphql(complexity = 0)]
    page_info: PageInfo,
}

/// `InventoryItem`.
#[derive(SimpleObject, Clone)]
#[graphql(complex)]
pub struct InventoryItem {
    #[graphql(complexity = 0)]
    id: ID,
    #[graphql(complexity = 0)]
    sku: Option<String>,
    #[graphql(complexity = 0)]
    tracked: bool,
    #[graphql(skip)]
    item: u64,
    #[graphql(skip)]
    levels: Vec<(String, i64)>,
}

#[ComplexObject]
impl InventoryItem {
    /// The item's levels, one per location it is stocked at.
    #[graphql(complexity = "2 + first.or(last).unwrap_or(0).max(0) as usize * child_complexity")]
    async fn inventory_levels(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
    ) -> Result<InventoryLevelConnection> {
        let first = page_size(ctx, first, last)?;
        let skip = match after {
            Some(c) => decode_cursor(&c)? as usize,
            None => 0,
        };
        let all: Vec<(usize, &(String, i64))> = self.levels.iter().enumerate().skip(skip).collect();
        let more = all.len() > first;
        let nodes: Vec<(String, InventoryLevel)> = all
            .into_iter()
            .take(first)
            .map(|(i, (location, available))| {
                (
                    encode_cursor(i as u64 + 1),
                    InventoryLevel {
                        id: ID(format!(
                            "gid://shopify/InventoryLevel/{}?inventory_item_id={}",
                            location.rsplit('/').next().unwrap_or("0"),
                            self.item
                        )),
                        location: location_view(location),
                        available: *available,
                    },
                )
            })
            .collect();
        Ok(InventoryLevelConnection {
            page_info: page_info(&nodes, more, skip > 0),
            edges: nodes
                .iter()
                .map(|(cursor, node)| InventoryLevelEdge {
                    cursor: cursor.clone(),
                    node: node.clone(),
                })
                .collect(),
            nodes: nodes.into_iter().map(|(_, n)| n).collect(),
        })
    }
}

/// `ProductVariant`.
#[derive(SimpleObject, Clone)]
pub struct ProductVariant {
    #[graphql(complexity = 0)]
    id: ID,
    #[graphql(complexity = 0)]
    sku: Option<String>,
    #[graphql(complexity = 0)]
    barcode: Option<String>,
    #[graphql(complexity = 0)]
    display_name: String,
    #[graphql(complexity = 0)]
    title: String,
    #[graphql(complexity = 0)]
    price: Money,
    #[graphql(complexity = 0)]
    compare_at_price: Option<Money>,
    #[graphql(complexity = 0)]
    inventory_quantity: Option<i32>,
    product: Product,
    inventory_item: InventoryItem,
}

/// `ProductVariantEdge`.
#[derive(SimpleObject, Clone)]
pub struct ProductVariantEdge {
    #[graphql(complexity = 0)]
    cursor: String,
    node: ProductVariant,
}

/// `ProductVariantConnection`.
#[derive(SimpleObject, Clone)]
pub struct ProductVariantConnection {
    nodes: Vec<ProductVariant>,
    #[graphql(complexity = "child_complexity")]
    edges: Vec<ProductVariantEdge>,
    #[graphql(complexity = 0)]
    page_info: PageInfo,
}

/// `Shop`.
#[derive(SimpleObject, Clone)]
pub struct Shop {
    #[graphql(complexity = 0)]
    id: ID,
    #[graphql(complexity = 0)]
    name: String,
    #[graphql(complexity = 0)]
    currency_code: String,
}

/// `BulkOperationStatus`.
#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum BulkOperationStatus {
    /// Canceled.
    Canceled,
    /// Being canceled.
    Canceling,
    /// Done.
    Completed,
    /// Queued.
    Created,
    /// Results expired.
    Expired,
    /// Failed.
    Failed,
    /// Running.
    Running,
}

/// `BulkOperationErrorCode`.
#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum BulkOperationErrorCode {
    /// Missing access.
    AccessDenied,
    /// Shopify failed.
    InternalServerError,
    /// Ran too long.
    Timeout,
}

/// `BulkOperationType`.
#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum BulkOperationType {
    /// A bulk mutation.
    Mutation,
    /// A bulk query.
    Query,
}

/// `BulkOperation`.
#[derive(SimpleObject, Clone, Debug)]
pub struct BulkOperation {
    #[graphql(complexity = 0)]
    pub(crate) id: ID,
    #[graphql(complexity = 0)]
    pub(crate) status: BulkOperationStatus,
    #[graphql(complexity = 0)]
    pub(crate) error_code: Option<BulkOperationErrorCode>,
    #[graphql(complexity = 0)]
    pub(crate) object_count: UnsignedInt64,
    #[graphql(complexity = 0)]
    pub(crate) root_object_count: UnsignedInt64,
    #[graphql(complexity = 0)]
    pub(crate) file_size: Option<UnsignedInt64>,
    #[graphql(complexity = 0)]
    pub(crate) url: Option<String>,
    #[graphql(complexity = 0)]
    pub(crate) partial_data_url: Option<String>,
    #[graphql(complexity = 0)]
    pub(crate) query: String,
    #[graphql(name = "type", complexity = 0)]
    pub(crate) kind: BulkOperationType,
}

/// `Node`.
#[derive(Interface)]
#[graphql(field(name = "id", ty = "&ID"))]
pub enum Node {
    /// A bulk operation.
    BulkOperation(BulkOperation),
    /// A variant.
    ProductVariant(ProductVariant),
}

// ---------------------------------------------------------------- views

fn location_view(location: &str) -> Location {
    Location {
        id: ID(location.to_string()),
        name: format!("Location {}", location.rsplit('/').next().unwrap_or("?")),
    }
}

fn money(minor: i64, catalog: &Catalog) -> Money {
    Money(SdkMoney::new(minor, catalog.currency).major_string())
}

fn variant_view(v: &Variant, catalog: &Catalog) -> ProductVariant {
    ProductVariant {
        id: ID(gid("ProductVariant", v.id)),
        sku: Some(v.sku.clone()),
        barcode: None,
        display_name: v.title.clone(),
        title: v.title.clone(),
        price: money(v.price, catalog),
        compare_at_price: v.compare_at.map(|c| money(c, catalog)),
        inventory_quantity: i32::try_from(v.levels.values().sum::<i64>()).ok(),
        product: Product {
            id: ID(gid("Product", v.product)),
            title: v.title.clone(),
        },
        inventory_item: InventoryItem {
            id: ID(gid("InventoryItem", v.item)),
            sku: Some(v.sku.clone()),
            tracked: true,
            item: v.item,
            levels: v.levels.iter().map(|(l, q)| (l.clone(), *q)).collect(),
        },
    }
}

fn encode_cursor(n: u64) -> String {
    B64.encode(format!("{{\"last_id\":{n}}}"))
}

fn decode_cursor(c: &str) -> Result<u64> {
    let bytes = B64
        .decode(c)
        .map_err(|_| coded(format!("Invalid cursor: {c}"), "BAD_REQUEST"))?;
    let v: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|_| coded(format!("Invalid cursor: {c}"), "BAD_REQUEST"))?;
    v.get("last_id")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| coded(format!("Invalid cursor: {c}"), "BAD_REQUEST"))
}

fn page_size(ctx: &Context<'_>, first: Option<i32>, last: Option<i32>) -> Result<usize> {
    let max = shared(ctx)?.options.max_page_size;
    if last.is_some() {
        return Err(coded(
            "the simulator pages forward only: use first/after",
            "BAD_REQUEST",
        ));
    }
    let first =
        first.ok_or_else(|| coded("you must provide one of first or last", "BAD_REQUEST"))?;
    match usize::try_from(first) {
        Ok(n) if n <= max => Ok(n),
        _ => Err(coded(
            format!("first must be between 0 and {max}, got {first}"),
            "BAD_REQUEST",
        )),
    }
}

fn page_info<T>(nodes: &[(String, T)], more: bool, previous: bool) -> PageInfo {
    PageInfo {
        has_next_page: more,
        has_previous_page: previous,
        start_cursor: nodes.first().map(|(c, _)| c.clone()),
        end_cursor: nodes.last().map(|(c, _)| c.clone()),
    }
}

// ---------------------------------------------------------------- queries

/// `QueryRoot`.
pub struct QueryRoot;

#[Object(name = "QueryRoot")]
impl QueryRoot {
    /// Variants, paged by id, optionally filtered by a search `query`.
    #[graphql(complexity = "2 + first.or(last).unwrap_or(0).max(0) as usize * child_complexity")]
    async fn product_variants(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        query: Option<String>,
    ) -> Result<ProductVariantConnection> {
        let first = page_size(ctx, first, last)?;
        let after = after
            .as_deref()
            .map(decode_cursor)
            .transpose()?
            .unwrap_or(0);
        let filter = Filter::parse(query.as_deref());
        let shared = shared(ctx)?;
        let catalog = shared.catalog();
        let (page, more) = catalog.page(after, first, &filter);
        let nodes: Vec<(String, ProductVariant)> = page
            .iter()
            .map(|v| (encode_cursor(v.id), variant_view(v, &catalog)))
            .collect();
        Ok(ProductVariantConnection {
            page_info: page_info(&nodes, more, after > 0),
            edges: nodes
                .iter()
                .map(|(cursor, node)| ProductVariantEdge {
                    cursor: cursor.clone(),
                    node: node.clone(),
                })
                .collect(),
            nodes: nodes.into_iter().map(|(_, n)| n).collect(),
        })
    }

    /// One variant by gid.
    async fn product_variant(&self, ctx: &Context<'_>, id: ID) -> Result<Option<ProductVariant>> {
        let shared = shared(ctx)?;
        let catalog = shared.catalog();
        Ok(parse_gid(&id, "ProductVariant")
            .and_then(|n| catalog.variants.get(&n))
            .map(|v| variant_view(v, &catalog)))
    }

    /// The shop.
    async fn shop(&self, ctx: &Context<'_>) -> Result<Shop> {
        let shared = shared(ctx)?;
        Ok(Shop {
            id: ID("gid://shopify/Shop/1".into()),
            name: shared.options.shop_name.clone(),
            currency_code: shared.options.currency.code().to_string(),
        })
    }

    /// Any node by gid (bulk operations and variants).
    async fn node(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Node>> {
        let shared = shared(ctx)?;
        if let Some(n) = parse_gid(&id, "BulkOperation") {
            let info = request(ctx)?;
            return Ok(shared
                .observe_bulk(n, &info.base_url)
                .map(Node::BulkOperation));
        }
        let catalog = shared.catalog();
        Ok(parse_gid(&id, "ProductVariant")
            .and_then(|n| catalog.variants.get(&n))
            .map(|v| Node::ProductVariant(variant_view(v, &catalog))))
    }

    /// The app's most recent bulk operation of a type.
    async fn current_bulk_operation(
        &self,
        ctx: &Context<'_>,
        #[graphql(name = "type", default_with = "BulkOperationType::Query")]
        kind: BulkOperationType,
    ) -> Result<Option<BulkOperation>> {
        let shared = shared(ctx)?;
        let info = request(ctx)?;
        if kind == BulkOperationType::Mutation {
            return Ok(None);
        }
        Ok(shared
            .latest_bulk()
            .and_then(|n| shared.observe_bulk(n, &info.base_url)))
    }
}

// ---------------------------------------------------------------- mutations

/// `InventoryQuantityInput`.
#[derive(InputObject)]
pub struct InventoryQuantityInput {
    inventory_item_id: ID,
    location_id: ID,
    quantity: i32,
    change_from_quantity: MaybeUndefined<i32>,
    compare_quantity: Option<i32>,
}

/// `InventorySetQuantitiesInput`.
#[derive(InputObject)]
pub struct InventorySetQuantitiesInput {
    name: String,
    reason: String,
    reference_document_uri: Option<String>,
    quantities: Vec<InventoryQuantityInput>,
    ignore_compare_quantity: Option<bool>,
}

/// `InventorySetQuantitiesUserErrorCode`.
#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
#[allow(missing_docs)]
pub enum InventorySetQuantitiesUserErrorCode {
    ChangeFromQuantityStale,
    CompareQuantityRequired,
    CompareQuantityStale,
    IdempotencyConcurrentRequest,
    IdempotencyKeyParameterMismatch,
    InvalidInventoryItem,
    InvalidLocation,
    InvalidName,
    InvalidQuantityNegative,
    InvalidQuantityTooHigh,
    InvalidQuantityTooLow,
    InvalidReason,
    InvalidReferenceDocument,
    ItemNotStockedAtLocation,
    NoDuplicateInventoryItemIdGroupIdPair,
    NonMutableInventoryItem,
}

/// `InventorySetQuantitiesUserError`.
#[derive(SimpleObject, Clone, Debug)]
pub struct InventorySetQuantitiesUserError {
    field: Option<Vec<String>>,
    message: String,
    code: Option<InventorySetQuantitiesUserErrorCode>,
}

/// `InventoryAdjustmentGroup`.
#[derive(SimpleObject, Clone, Debug)]
pub struct InventoryAdjustmentGroup {
    id: ID,
    reason: String,
    reference_document_uri: Option<String>,
}

/// `InventorySetQuantitiesPayload`.
#[derive(SimpleObject, Clone, Debug)]
pub struct InventorySetQuantitiesPayload {
    inventory_adjustment_group: Option<InventoryAdjustmentGroup>,
    user_errors: Vec<InventorySetQuantitiesUserError>,
}

/// `ProductVariantsBulkInput` (the fields the simulator models).
#[derive(InputObject)]
pub struct ProductVariantsBulkInput {
    id: Option<ID>,
    price: Option<Money>,
    compare_at_price: MaybeUndefined<Money>,
}

/// `ProductVariantsBulkUpdateUserErrorCode` (the codes the simulator produces).
#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
#[allow(missing_docs)]
pub enum ProductVariantsBulkUpdateUserErrorCode {
    GreaterThanOrEqualTo,
    InvalidInput,
    MustBeForThisProduct,
    ProductDoesNotExist,
    ProductVariantDoesNotExist,
    ProductVariantIdMissing,
}

/// `ProductVariantsBulkUpdateUserError`.
#[derive(SimpleObject, Clone, Debug)]
pub struct ProductVariantsBulkUpdateUserError {
    field: Option<Vec<String>>,
    message: String,
    code: Option<ProductVariantsBulkUpdateUserErrorCode>,
}

/// `ProductVariantsBulkUpdatePayload`.
#[derive(SimpleObject, Clone)]
pub struct ProductVariantsBulkUpdatePayload {
    product: Option<Product>,
    product_variants: Option<Vec<ProductVariant>>,
    user_errors: Vec<ProductVariantsBulkUpdateUserError>,
}

/// `BulkOperationUserErrorCode`.
#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
#[allow(missing_docs)]
pub enum BulkOperationUserErrorCode {
    Invalid,
    OperationInProgress,
}

/// `BulkOperationUserError`.
#[derive(SimpleObject, Clone, Debug)]
pub struct BulkOperationUserError {
    field: Option<Vec<String>>,
    message: String,
    code: Option<BulkOperationUserErrorCode>,
}

/// `BulkOperationRunQueryPayload`.
#[derive(SimpleObject, Clone, Debug)]
pub struct BulkOperationRunQueryPayload {
    bulk_operation: Option<BulkOperation>,
    user_errors: Vec<BulkOperationUserError>,
}

/// `Mutation`.
pub struct MutationRoot;

fn path(parts: &[&str]) -> Option<Vec<String>> {
    Some(parts.iter().map(|s| s.to_string()).collect())
}

fn qty_error(
    i: usize,
    field: &str,
    code: InventorySetQuantitiesUserErrorCode,
    message: impl Into<String>,
) -> InventorySetQuantitiesUserError {
    InventorySetQuantitiesUserError {
        field: path(&["input", "quantities", &i.to_string(), field]),
        message: message.into(),
        code: Some(code),
    }
}

fn check_array(len: usize, max: usize) -> Result<()> {
    if len > max {
        return Err(coded(
            format!("The input array size of {len} is greater than the maximum allowed of {max}."),
            "MAX_INPUT_SIZE_EXCEEDED",
        ));
    }
    Ok(())
}

/// A stable fingerprint of the parameters, for `IDEMPOTENCY_KEY_PARAMETER_MISMATCH`.
fn fingerprint(input: &InventorySetQuantitiesInput) -> String {
    let mut s = format!(
        "{}|{}|{:?}|{:?}",
        input.name, input.reason, input.reference_document_uri, input.ignore_compare_quantity
    );
    for q in &input.quantities {
        let cfq = match &q.change_from_quantity {
            MaybeUndefined::Undefined => "u".to_string(),
            MaybeUndefined::Null => "n".to_string(),
            MaybeUndefined::Value(v) => v.to_string(),
        };
        s.push_str(&format!(
            "|{}:{}:{}:{cfq}:{:?}",
            q.inventory_item_id.as_str(),
            q.location_id.as_str(),
            q.quantity,
            q.compare_quantity
        ));
    }
    s
}

#[Object(name = "Mutation")]
impl MutationRoot {
    /// Sets absolute quantities, all or nothing.
    #[graphql(complexity = 10)]
    async fn inventory_set_quantities(
        &self,
        ctx: &Context<'_>,
        input: InventorySetQuantitiesInput,
    ) -> Result<InventorySetQuantitiesPayload> {
        use InventorySetQuantitiesUserErrorCode as Code;
        let shared = shared(ctx)?;
        let info = request(ctx)?;
        let key = info.take_idempotency_key();
        let mandatory = idempotency_mandatory(&info.api_version);
        check_array(input.quantities.len(), shared.options.max_input_array)?;
        if mandatory {
            if key.is_none() {
                return Err(coded(
                    "The @idempotent directive is required for this mutation but was not provided.",
                    "BAD_REQUEST",
                ));
            }
            if input.ignore_compare_quantity.is_some()
                || input
                    .quantities
                    .iter()
                    .any(|q| q.compare_quantity.is_some())
            {
                return Err(coded(
                    "ignoreCompareQuantity and compareQuantity were removed in 2026-04: use changeFromQuantity",
                    "argumentNotAccepted",
                ));
            }
            if input
                .quantities
                .iter()
                .any(|q| q.change_from_quantity.is_undefined())
            {
                return Err(coded(
                    "InventoryQuantityInput must include the following argument: changeFromQuantity.",
                    "INVALID_FIELD_ARGUMENTS",
                ));
            }
        }
        let print = fingerprint(&input);
        if let Some(key) = &key {
            match shared.idempotent_replay(key, &print) {
                Some(Ok(payload)) => return Ok(payload),
                Some(Err(())) => {
                    return Ok(InventorySetQuantitiesPayload {
                        inventory_adjustment_group: None,
                        user_errors: vec![InventorySetQuantitiesUserError {
                            field: None,
                            message: "The same idempotency key cannot be used with different operation parameters.".into(),
                            code: Some(Code::IdempotencyKeyParameterMismatch),
                        }],
                    });
                }
                None => {}
            }
        }
        let mut errors = Vec::new();
        if !matches!(input.name.as_str(), "available" | "on_hand") {
            errors.push(InventorySetQuantitiesUserError {
                field: path(&["input", "name"]),
                message: "The quantity name must be either 'available' or 'on_hand'.".into(),
                code: Some(Code::InvalidName),
            });
        }
        if !REASONS.contains(&input.reason.as_str()) {
            errors.push(InventorySetQuantitiesUserError {
                field: path(&["input", "reason"]),
                message: "The specified reason is invalid.".into(),
                code: Some(Code::InvalidReason),
            });
        }
        if input
            .reference_document_uri
            .as_deref()
            .is_some_and(|u| !u.contains("://"))
        {
            errors.push(InventorySetQuantitiesUserError {
                field: path(&["input", "referenceDocumentUri"]),
                message: "The specified reference document is invalid.".into(),
                code: Some(Code::InvalidReferenceDocument),
            });
        }
        let mut catalog = shared.catalog();
        let mut seen = HashSet::new();
        let mut writes = Vec::new();
        for (i, q) in input.quantities.iter().enumerate() {
            let item = parse_gid(&q.inventory_item_id, "InventoryItem");
            let Some(variant) = item.and_then(|n| catalog.by_item(n)) else {
                errors.push(qty_error(
                    i,
                    "inventoryItemId",
                    Code::InvalidInventoryItem,
                    "The specified inventory item could not be found.",
                ));
                continue;
            };
            let location = q.location_id.to_string();
            if !shared.options.locations.contains(&location) {
                errors.push(qty_error(
                    i,
                    "locationId",
                    Code::InvalidLocation,
                    "The specified location could not be found.",
                ));
                continue;
            }
            let Some(current) = variant.levels.get(&location).copied() else {
                errors.push(qty_error(
                    i,
                    "locationId",
                    Code::ItemNotStockedAtLocation,
                    "The specified inventory item is not stocked at the location.",
                ));
                continue;
            };
            if !seen.insert((variant.item, location.clone())) {
                errors.push(qty_error(
                    i,
                    "inventoryItemId",
                    Code::NoDuplicateInventoryItemIdGroupIdPair,
                    "The combination of inventoryItemId and locationId must be unique.",
                ));
                continue;
            }
            if q.quantity > 1_000_000_000 {
                errors.push(qty_error(
                    i,
                    "quantity",
                    Code::InvalidQuantityTooHigh,
                    "The quantity can't be higher than 1,000,000,000.",
                ));
                continue;
            }
            if q.quantity < -1_000_000_000 {
                errors.push(qty_error(
                    i,
                    "quantity",
                    Code::InvalidQuantityTooLow,
                    "The quantity can't be lower than -1,000,000,000.",
                ));
                continue;
            }
            match &q.change_from_quantity {
                MaybeUndefined::Value(expected) if i64::from(*expected) != current => {
                    errors.push(qty_error(
                        i,
                        "changeFromQuantity",
                        Code::ChangeFromQuantityStale,
                        "The changeFromQuantity value does not match persisted value.",
                    ));
                    continue;
                }
                MaybeUndefined::Value(_) | MaybeUndefined::Null => {}
                MaybeUndefined::Undefined => {
                    // 2026-01 fallback: the legacy compareQuantity check.
                    if input.ignore_compare_quantity != Some(true) {
                        match q.compare_quantity {
                            None => {
                                errors.push(qty_error(i, "compareQuantity", Code::CompareQuantityRequired, "The compareQuantity argument must be given to each quantity or ignored using ignoreCompareQuantity."));
                                continue;
                            }
                            Some(c) if i64::from(c) != current => {
                                errors.push(qty_error(
                                    i,
                                    "compareQuantity",
                                    Code::CompareQuantityStale,
                                    "The compareQuantity value does not match persisted value.",
                                ));
                                continue;
                            }
                            Some(_) => {}
                        }
                    }
                }
            }
            writes.push((variant.item, location, i64::from(q.quantity)));
        }
        if !errors.is_empty() {
            // All or nothing: nothing is applied.
            return Ok(InventorySetQuantitiesPayload {
                inventory_adjustment_group: None,
                user_errors: errors,
            });
        }
        let mut changed = Vec::new();
        for (item, location, quantity) in &writes {
            if let Some(v) = catalog.by_item_mut(*item)
                && v.levels.insert(location.clone(), *quantity) != Some(*quantity)
            {
                changed.push((*item, location.as_str(), *quantity));
            }
        }
        drop(catalog);
        // As Shopify does for changes made by apps: one inventory_levels/update per level
        // whose quantity changed.
        for (item, location, quantity) in changed {
            shared
                .webhooks
                .emit(super::events::INVENTORY_LEVELS_UPDATE, |at| {
                    super::events::inventory_level(item, location, quantity, at)
                });
        }
        shared.counters.write(writes.len());
        let payload = InventorySetQuantitiesPayload {
            inventory_adjustment_group: Some(InventoryAdjustmentGroup {
                id: ID(gid("InventoryAdjustmentGroup", shared.next_id())),
                reason: input.reason.clone(),
                reference_document_uri: input.reference_document_uri.clone(),
            }),
            user_errors: Vec::new(),
        };
        if let Some(key) = key {
            shared.remember_idempotent(key, print, payload.clone());
        }
        Ok(payload)
    }

    /// Updates variants of one product.
    #[graphql(complexity = 10)]
    async fn product_variants_bulk_update(
        &self,
        ctx: &Context<'_>,
        product_id: ID,
        variants: Vec<ProductVariantsBulkInput>,
        allow_partial_updates: Option<bool>,
    ) -> Result<ProductVariantsBulkUpdatePayload> {
        use ProductVariantsBulkUpdateUserErrorCode as Code;
        let shared = shared(ctx)?;
        // An @idempotent key here is accepted and ignored (the mutation takes none).
        let _ = request(ctx)?.take_idempotency_key();
        check_array(variants.len(), shared.options.max_input_array)?;
        let mut catalog = shared.catalog();
        let product = parse_gid(&product_id, "Product").filter(|p| catalog.has_product(*p));
        let Some(product) = product else {
            return Ok(ProductVariantsBulkUpdatePayload {
                product: None,
                product_variants: None,
                user_errors: vec![ProductVariantsBulkUpdateUserError {
                    field: path(&["productId"]),
                    message: "Product does not exist".into(),
                    code: Some(Code::ProductDoesNotExist),
                }],
            });
        };
        let currency = catalog.currency;
        let parse = |m: &Money| -> Option<i64> {
            SdkMoney::parse_major(&m.0, currency).ok().map(|m| m.minor)
        };
        let mut errors = Vec::new();
        let mut updates = Vec::new();
        for (i, input) in variants.iter().enumerate() {
            let at = |field: &str| path(&["variants", &i.to_string(), field]);
            let Some(id) = &input.id else {
                errors.push(ProductVariantsBulkUpdateUserError {
                    field: at("id"),
                    message: "Product variant is missing ID attribute".into(),
                    code: Some(Code::ProductVariantIdMissing),
                });
                continue;
            };
            let Some(variant) =
                parse_gid(id, "ProductVariant").and_then(|n| catalog.variants.get(&n))
            else {
                errors.push(ProductVariantsBulkUpdateUserError {
                    field: at("id"),
                    message: "Product variant does not exist".into(),
                    code: Some(Code::ProductVariantDoesNotExist),
                });
                continue;
            };
            if variant.product != product {
                errors.push(ProductVariantsBulkUpdateUserError {
                    field: at("id"),
                    message: "Product variant must be for this product".into(),
                    code: Some(Code::MustBeForThisProduct),
                });
                continue;
            }
            let price = match &input.price {
                None => None,
                Some(m) => match parse(m) {
                    None => {
                        errors.push(ProductVariantsBulkUpdateUserError {
                            field: at("price"),
                            message: format!("Price is invalid: {}", m.0),
                            code: Some(Code::InvalidInput),
                        });
                        continue;
                    }
                    Some(p) if p < 0 => {
                        errors.push(ProductVariantsBulkUpdateUserError {
                            field: at("price"),
                            message: "Price must be greater than or equal to 0".into(),
                            code: Some(Code::GreaterThanOrEqualTo),
                        });
                        continue;
                    }
                    Some(p) => Some(p),
                },
            };
            let compare_at = match &input.compare_at_price {
                MaybeUndefined::Undefined => None,
                MaybeUndefined::Null => Some(None),
                MaybeUndefined::Value(m) => match parse(m) {
                    None => {
                        errors.push(ProductVariantsBulkUpdateUserError {
                            field: at("compareAtPrice"),
                            message: format!("Compare at price is invalid: {}", m.0),
                            code: Some(Code::InvalidInput),
                        });
                        continue;
                    }
                    Some(p) if p < 0 => {
                        errors.push(ProductVariantsBulkUpdateUserError {
                            field: at("compareAtPrice"),
                            message: "Compare at price must be greater than or equal to 0".into(),
                            code: Some(Code::GreaterThanOrEqualTo),
                        });
                        continue;
                    }
                    Some(p) => Some(Some(p)),
                },
            };
            updates.push((variant.id, price, compare_at));
        }
        let apply = errors.is_empty() || allow_partial_updates == Some(true);
        let mut updated = Vec::new();
        if apply {
            let mut changed = false;
            for (id, price, compare_at) in &updates {
                if let Some(v) = catalog.variants.get_mut(id) {
                    let before = (v.price, v.compare_at);
                    if let Some(p) = price {
                        v.price = *p;
                    }
                    if let Some(c) = compare_at {
                        v.compare_at = *c;
                    }
                    changed |= before != (v.price, v.compare_at);
                }
            }
            if changed {
                // One products/update for the product, as Shopify sends for an app's edit.
                shared.webhooks.emit(super::events::PRODUCTS_UPDATE, |at| {
                    super::events::product(&catalog, product, at).unwrap_or_default()
                });
            }
            for (id, ..) in &updates {
                if let Some(v) = catalog.variants.get(id) {
                    updated.push(variant_view(v, &catalog));
                }
            }
        }
        let product_view = catalog
            .product_variants(product)
            .next()
            .map(|v| variant_view(v, &catalog).product);
        drop(catalog);
        if !updated.is_empty() {
            shared.counters.write(updated.len());
        }
        Ok(ProductVariantsBulkUpdatePayload {
            product: product_view,
            product_variants: apply.then_some(updated),
            user_errors: errors,
        })
    }

    /// Starts a bulk query.
    #[graphql(complexity = 10)]
    async fn bulk_operation_run_query(
        &self,
        ctx: &Context<'_>,
        query: String,
        group_objects: Option<bool>,
    ) -> Result<BulkOperationRunQueryPayload> {
        let shared = shared(ctx)?;
        let info = request(ctx)?;
        let _ = group_objects;
        match shared.start_bulk(&query, &info.base_url) {
            Ok(op) => Ok(BulkOperationRunQueryPayload {
                bulk_operation: Some(op),
                user_errors: Vec::new(),
            }),
            Err((code, message)) => Ok(BulkOperationRunQueryPayload {
                bulk_operation: None,
                user_errors: vec![BulkOperationUserError {
                    field: path(&["query"]),
                    message,
                    code: Some(code),
                }],
            }),
        }
    }
}
