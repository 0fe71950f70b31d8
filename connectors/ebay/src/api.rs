//! The eBay wire format: paths, constants and JSON bodies of the Sell Inventory API and
//! Sell Feed API calls this crate makes, shared by the adapter and the simulator.
//!
//! Field names follow eBay's OpenAPI contracts (`sell_inventory_v1_oas3`, v1.18;
//! `sell_feed_v1_oas3`, v1.3). Everything eBay may omit is optional here: the adapter decides
//! what an absent field means, and never fails a whole page for one odd item (items are
//! kept as raw JSON and decoded one by one).

use serde::{Deserialize, Serialize};

/// Path prefix of the Sell Inventory API.
pub const INVENTORY: &str = "/sell/inventory/v1";
/// Path prefix of the Sell Feed API.
pub const FEED: &str = "/sell/feed/v1";
/// The feed type of the active inventory report (SKU, price, quantity of active listings).
pub const ACTIVE_INVENTORY_REPORT: &str = "LMS_ACTIVE_INVENTORY_REPORT";
/// The header naming the marketplace.
pub const MARKETPLACE_HEADER: &str = "X-EBAY-C-MARKETPLACE-ID";

/// `errorId` of "Invalid access token" (domain `OAuth`, HTTP 401).
pub const ERR_INVALID_TOKEN: i64 = 1001;
/// `errorId` of "Access denied: Insufficient permissions to fulfill the request" (domain
/// `ACCESS`, HTTP 403): the token lacks a scope the call needs, or is of the wrong kind.
pub const ERR_ACCESS_DENIED: i64 = 1100;
/// `errorId` of "Too many requests" (domain `ACCESS`, HTTP 429): the call quota is spent.
pub const ERR_TOO_MANY_REQUESTS: i64 = 2001;
/// `errorId` of a request eBay could not read (invalid JSON).
pub const ERR_INVALID_REQUEST: i64 = 2004;
/// `errorId` of "A system error has occurred" (HTTP 500, retryable).
pub const ERR_SYSTEM: i64 = 25001;
/// `errorId` of "Invalid price".
pub const ERR_INVALID_PRICE: i64 = 25003;
/// `errorId` of "Invalid quantity".
pub const ERR_INVALID_QUANTITY: i64 = 25004;
/// `errorId` of "Concurrent access of Inventory or InventoryItemGroup. Please try again
/// later" (HTTP 500, retryable).
pub const ERR_CONCURRENT_ACCESS: i64 = 25025;
/// `errorId` of "SKU … is not available in the system".
pub const ERR_SKU_NOT_AVAILABLE: i64 = 25702;
/// `errorId` of "You have provided invalid pagination values".
pub const ERR_PAGINATION: i64 = 25706;
/// `errorId` of "Invalid value for {fieldName}".
pub const ERR_INVALID_VALUE: i64 = 25709;
/// `errorId` of "This Offer is not available".
pub const ERR_OFFER_NOT_AVAILABLE: i64 = 25713;
/// `errorId` of "The number of InventoryItems in the request cannot exceed {n}".
pub const ERR_TOO_MANY_ITEMS: i64 = 25727;

/// A money amount as eBay writes it: a decimal string and a currency code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Amount {
    /// The amount in major units, e.g. `"19.99"`.
    pub value: String,
    /// The ISO 4217 currency code.
    pub currency: String,
}

/// `shipToLocationAvailability`: the total "ship-to-home" quantity of an inventory item.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShipToLocationAvailability {
    /// The quantity available for purchase across the published offers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantity: Option<i64>,
}

/// `availability` of an inventory item.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Availability {
    /// The ship-to-home quantity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ship_to_location_availability: Option<ShipToLocationAvailability>,
}

/// `product` of an inventory item (the fields omnisync reads).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Product {
    /// The title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// EANs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ean: Vec<String>,
    /// UPCs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upc: Vec<String>,
    /// ISBNs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub isbn: Vec<String>,
}

/// An inventory item (`InventoryItemWithSkuLocaleGroupid`), the fields omnisync reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InventoryItem {
    /// The seller's SKU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku: Option<String>,
    /// The locale, e.g. `de_DE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    /// Product details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<Product>,
    /// Quantities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability: Option<Availability>,
}

/// The answer of `GET /inventory_item?limit=&offset=` (`InventoryItems`). `offset` is the
/// 0-based page number.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InventoryItemsPage {
    /// URL of this page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub href: Option<String>,
    /// URL of the next page; present only when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// URL of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev: Option<String>,
    /// Items per page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Documented as "the total number of pages".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Inventory items on the account. Required: an answer without it is not this call's.
    pub total: u64,
    /// The items, decoded one by one by the adapter.
    #[serde(default)]
    pub inventory_items: Vec<serde_json::Value>,
}

/// `pricingSummary` of an offer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PricingSummary {
    /// The listing price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<Amount>,
}

/// `listing` of a published offer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListingDetails {
    /// The eBay listing (item) id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listing_id: Option<String>,
    /// `ACTIVE`, `ENDED`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listing_status: Option<String>,
}

/// An offer (`EbayOfferDetailsWithAll`), the fields omnisync reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OfferDetails {
    /// The offer id, needed by `bulk_update_price_quantity`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offer_id: Option<String>,
    /// The SKU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku: Option<String>,
    /// The marketplace, e.g. `EBAY_DE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub marketplace_id: Option<String>,
    /// `FIXED_PRICE` or `AUCTION`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// The quantity offered on this marketplace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_quantity: Option<i64>,
    /// The price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricing_summary: Option<PricingSummary>,
    /// `PUBLISHED` or `UNPUBLISHED`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// The listing, for published offers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listing: Option<ListingDetails>,
}

/// The answer of `GET /offer?sku=` (`Offers`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OffersPage {
    /// URL of this page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub href: Option<String>,
    /// Offers per page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Offers on this page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Offers of the SKU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    /// The offers, decoded one by one by the adapter.
    #[serde(default)]
    pub offers: Vec<serde_json::Value>,
}

/// One error or warning (`ErrorDetailV3`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorDetail {
    /// eBay's error code.
    #[serde(default)]
    pub error_id: i64,
    /// `API_INVENTORY`, `API_FEED`, `OAuth`, `ACCESS`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// The subdomain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subdomain: Option<String>,
    /// `REQUEST`, `APPLICATION` or `BUSINESS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// The short message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The long message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub long_message: Option<String>,
    /// Name/value pairs naming the input at fault.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parameters: Vec<ErrorParameter>,
}

impl ErrorDetail {
    /// An error in eBay's shape.
    pub fn new(error_id: i64, domain: &str, category: &str, message: impl Into<String>) -> Self {
        ErrorDetail {
            error_id,
            domain: Some(domain.to_string()),
            category: Some(category.to_string()),
            message: Some(message.into()),
            ..ErrorDetail::default()
        }
    }

    /// `errorId 25709: Invalid value for price.` — for reports and dead letters.
    pub fn describe(&self) -> String {
        let message = self
            .long_message
            .as_deref()
            .or(self.message.as_deref())
            .unwrap_or("(no message)");
        format!("errorId {}: {message}", self.error_id)
    }
}

/// A parameter of an [`ErrorDetail`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorParameter {
    /// The name.
    #[serde(default)]
    pub name: String,
    /// The value.
    #[serde(default)]
    pub value: String,
}

/// The body of an eBay error answer: `{"errors":[…]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorsBody {
    /// The errors.
    #[serde(default)]
    pub errors: Vec<ErrorDetail>,
}

/// One SKU in a `bulk_get_inventory_item` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkuRef {
    /// The SKU.
    pub sku: String,
}

/// The body of `POST /bulk_get_inventory_item` (at most 25 SKUs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkGetInventoryItem {
    /// The SKUs.
    pub requests: Vec<SkuRef>,
}

/// One entry of the `bulk_get_inventory_item` answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetInventoryItemResponse {
    /// The SKU asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku: Option<String>,
    /// The HTTP status of this item (200 when found).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    /// The item, when found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inventory_item: Option<serde_json::Value>,
    /// Errors for this item.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ErrorDetail>,
    /// Warnings for this item.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<ErrorDetail>,
}

/// The answer of `POST /bulk_get_inventory_item`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BulkGetInventoryItemResponse {
    /// One entry per SKU asked for.
    pub responses: Vec<GetInventoryItemResponse>,
}

/// Price and/or quantity of one offer in a `bulk_update_price_quantity` request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OfferPriceQuantity {
    /// The offer.
    #[serde(default)]
    pub offer_id: String,
    /// The quantity offered on the offer's marketplace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_quantity: Option<i64>,
    /// The new price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<Amount>,
}

/// One inventory item in a `bulk_update_price_quantity` request (`PriceQuantity`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PriceQuantity {
    /// The SKU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku: Option<String>,
    /// The new total ship-to-home quantity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ship_to_location_availability: Option<ShipToLocationAvailability>,
    /// Offers of this SKU to update.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub offers: Vec<OfferPriceQuantity>,
}

/// The body of `POST /bulk_update_price_quantity` (`BulkPriceQuantity`, at most 25).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkPriceQuantity {
    /// The inventory items to update.
    pub requests: Vec<PriceQuantity>,
}

/// One entry of the `bulk_update_price_quantity` answer (`PriceQuantityResponse`): one per
/// offer updated, or one per inventory item when only its quantity was updated.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PriceQuantityResponse {
    /// The HTTP status of this entry (200 when applied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    /// The SKU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku: Option<String>,
    /// The offer, when an offer was updated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offer_id: Option<String>,
    /// Errors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ErrorDetail>,
    /// Warnings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<ErrorDetail>,
}

/// The answer of `POST /bulk_update_price_quantity` (HTTP 200, or 207 when mixed).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkPriceQuantityResponse {
    /// Per offer / inventory item.
    pub responses: Vec<PriceQuantityResponse>,
}

/// `filterCriteria` of an inventory task.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InventoryFilterCriteria {
    /// `FIXED_PRICE` or `AUCTION`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listing_format: Option<String>,
}

/// The body of `POST /sell/feed/v1/inventory_task`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateInventoryTaskRequest {
    /// [`ACTIVE_INVENTORY_REPORT`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feed_type: Option<String>,
    /// Must be `1.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_version: Option<String>,
    /// Optional listing format filter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter_criteria: Option<InventoryFilterCriteria>,
}

/// The answer of `GET /sell/feed/v1/inventory_task/{task_id}` (`InventoryTask`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InventoryTask {
    /// The task id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// `CREATED`, `QUEUED`, `IN_PROCESS`, `COMPLETED`, `COMPLETED_WITH_ERROR`,
    /// `PARTIALLY_PROCESSED` or `FAILED`. Required.
    pub status: String,
    /// The feed type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feed_type: Option<String>,
    /// When the task was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_date: Option<String>,
    /// When it completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_date: Option<String>,
    /// The schema version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_version: Option<String>,
    /// The `getInventoryTask` URI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail_href: Option<String>,
    /// The filter it was created with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter_criteria: Option<InventoryFilterCriteria>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_documented_bulk_update_answer() {
        let body = r#"{"responses":[
            {"statusCode":200,"sku":"A-1","offerId":"5000012345","warnings":[]},
            {"statusCode":400,"sku":"B-2","offerId":"5000012346","errors":[
              {"errorId":25709,"domain":"API_INVENTORY","category":"REQUEST",
               "message":"Invalid value for price.","parameters":[{"name":"fieldName","value":"price"}]}]}]}"#;
        let r: BulkPriceQuantityResponse = serde_json::from_str(body).unwrap();
        assert_eq!(r.responses.len(), 2);
        assert_eq!(r.responses[1].errors[0].error_id, ERR_INVALID_VALUE);
        assert_eq!(
            r.responses[1].errors[0].describe(),
            "errorId 25709: Invalid value for price."
        );
    }

    #[test]
    fn request_serializes_in_ebay_shape() {
        let body = BulkPriceQuantity {
            requests: vec![PriceQuantity {
                sku: Some("A-1".into()),
                ship_to_location_availability: Some(ShipToLocationAvailability {
                    quantity: Some(7),
                }),
                offers: vec![OfferPriceQuantity {
                    offer_id: "5000012345".into(),
                    available_quantity: Some(7),
                    price: Some(Amount {
                        value: "19.99".into(),
                        currency: "EUR".into(),
                    }),
                }],
            }],
        };
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            serde_json::json!({"requests":[{"sku":"A-1",
                "shipToLocationAvailability":{"quantity":7},
                "offers":[{"offerId":"5000012345","availableQuantity":7,
                           "price":{"value":"19.99","currency":"EUR"}}]}]})
        );
    }

    #[test]
    fn a_page_without_total_is_not_an_inventory_page() {
        assert!(serde_json::from_str::<InventoryItemsPage>(r#"{"error":"x"}"#).is_err());
        let p: InventoryItemsPage = serde_json::from_str(r#"{"total":0,"size":0}"#).unwrap();
        assert!(p.inventory_items.is_empty());
    }
}

/// The id at the end of a `Location` header (what a create call made: a feed task, a
/// notification destination or subscription); `what` names it in the errors.
pub(crate) fn id_from_location(
    op: &str,
    headers: &reqwest::header::HeaderMap,
    what: &str,
) -> Result<String, omnisync_sdk::ConnectorError> {
    use omnisync_sdk::ConnectorError;
    let location = headers
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ConnectorError::protocol(op, format!("no Location header naming {what}")))?;
    location
        .split(['?', '#'])
        .next()
        .unwrap_or("")
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|id| !id.is_empty())
        .map(str::to_string)
        .ok_or_else(|| {
            ConnectorError::protocol(op, format!("Location {location:?} names no id of {what}"))
        })
}

#[cfg(test)]
mod location_tests {
    use reqwest::header::{HeaderMap, LOCATION};

    #[test]
    fn ids_come_from_location() {
        let mut h = HeaderMap::new();
        h.insert(
            LOCATION,
            "https://api.ebay.com/commerce/notification/v1/destination/abc-1"
                .parse()
                .unwrap(),
        );
        assert_eq!(super::id_from_location("op", &h, "it").unwrap(), "abc-1");
        assert!(super::id_from_location("op", &HeaderMap::new(), "it").is_err());
    }
}
