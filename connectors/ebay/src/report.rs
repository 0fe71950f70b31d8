//! The active inventory report (`LMS_ACTIVE_INVENTORY_REPORT`) of the Sell Feed API: the
//! one documented bulk read of eBay offer prices.
//!
//! The report is produced by an asynchronous task (`POST /sell/feed/v1/inventory_task`) and
//! downloaded with `GET /sell/feed/v1/task/{task_id}/download_result_file`. The file is an
//! archive (in practice a ZIP; the documentation also allows gzip or plain) holding one XML
//! document of the LMS schema:
//!
//! ```xml
//! <BulkDataExchangeResponses xmlns="urn:ebay:apis:eBLBaseComponents">
//!   <ActiveInventoryReport>
//!     <Ack>Success</Ack>
//!     <SKUDetails>
//!       <SKU>A-1</SKU><Price currencyID="EUR">19.99</Price><Quantity>7</Quantity>
//!       <ItemID>110012345678</ItemID>
//!       <Variations><Variation><SKU>A-1-RED</SKU><Price currencyID="EUR">21.0</Price>
//!         <Quantity>2</Quantity></Variation></Variations>
//!     </SKUDetails>
//!   </ActiveInventoryReport>
//! </BulkDataExchangeResponses>
//! ```
//!
//! This module unpacks and parses such a file into [`ReportLine`]s (one per SKU; the
//! variations of a multi-variation listing become lines of their own carrying the parent's
//! item id), and writes one, for the simulator. It knows nothing about money: the adapter
//! turns the price strings into [`omnisync_sdk::Money`].

use std::io::{Cursor, Read, Write};

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

/// One SKU of the report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReportLine {
    /// The seller's SKU.
    pub sku: String,
    /// The listing (`ItemID`); for a variation, its listing's.
    pub item_id: Option<String>,
    /// The price as written (an XML double, e.g. `19.99` or `21.0`).
    pub price: Option<String>,
    /// The `currencyID` attribute of the price.
    pub currency: Option<String>,
    /// The quantity available on the listing.
    pub quantity: Option<i64>,
}

/// A parsed report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// The SKUs.
    pub lines: Vec<ReportLine>,
    /// Entries that could not be used, with the reason (e.g. a `SKUDetails` without SKU).
    pub skipped: Vec<String>,
}

/// Why a report file could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    /// The archive is broken or holds no XML file.
    #[error("report archive: {0}")]
    Archive(String),
    /// The XML is not well formed.
    #[error("report XML: {0}")]
    Xml(String),
    /// The report says it failed (`<Ack>Failure</Ack>`).
    #[error("report failed: {0}")]
    Failed(String),
}

/// Unpacks the downloaded file: a ZIP (first `.xml` entry, else the first entry), a gzip
/// stream, or the XML itself.
pub fn unpack(file: &[u8]) -> Result<Vec<u8>, ReportError> {
    if file.starts_with(b"PK\x03\x04") || file.starts_with(b"PK\x05\x06") {
        let mut archive = zip::ZipArchive::new(Cursor::new(file))
            .map_err(|e| ReportError::Archive(e.to_string()))?;
        let mut chosen = None;
        for i in 0..archive.len() {
            let entry = archive
                .by_index(i)
                .map_err(|e| ReportError::Archive(e.to_string()))?;
            let is_xml = entry
                .name()
                .map(|n| n.to_ascii_lowercase().ends_with(".xml"))
                .unwrap_or(false);
            if is_xml {
                chosen = Some(i);
                break;
            }
            if chosen.is_none() && !entry.is_dir() {
                chosen = Some(i);
            }
        }
        let index = chosen.ok_or_else(|| ReportError::Archive("the ZIP is empty".into()))?;
        let mut entry = archive
            .by_index(index)
            .map_err(|e| ReportError::Archive(e.to_string()))?;
        let mut out = Vec::new();
        entry
            .read_to_end(&mut out)
            .map_err(|e| ReportError::Archive(e.to_string()))?;
        Ok(out)
    } else if file.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(file)
            .read_to_end(&mut out)
            .map_err(|e| ReportError::Archive(format!("gzip: {e}")))?;
        Ok(out)
    } else {
        Ok(file.to_vec())
    }
}

/// The record being filled while its element is open.
#[derive(Default)]
struct Open {
    line: ReportLine,
    variations: Vec<ReportLine>,
}

/// Which field the current text belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Field {
    Sku,
    ItemId,
    Price,
    Quantity,
    Ack,
    Message,
}

/// Parses the XML of an active inventory report.
pub fn parse(xml: &[u8]) -> Result<Report, ReportError> {
    let text = std::str::from_utf8(xml)
        .map_err(|e| ReportError::Xml(format!("not UTF-8: {e}")))?
        .trim_start_matches('\u{feff}');
    let mut reader = Reader::from_str(text);
    reader.config_mut().trim_text(true);

    let mut report = Report::default();
    let mut detail: Option<Open> = None;
    let mut variation: Option<ReportLine> = None;
    let mut field: Option<Field> = None;
    let mut buf = String::new();
    let mut ack: Option<String> = None;
    let mut messages: Vec<String> = Vec::new();

    loop {
        let event = reader
            .read_event()
            .map_err(|e| ReportError::Xml(format!("at byte {}: {e}", reader.buffer_position())))?;
        match event {
            Event::Start(start) => {
                let name = start.local_name();
                let name = name.as_ref();
                buf.clear();
                field = None;
                match name {
                    "SKUDetails" => detail = Some(Open::default()),
                    "Variation" if detail.is_some() => variation = Some(ReportLine::default()),
                    "SKU" if detail.is_some() => field = Some(Field::Sku),
                    "ItemID" if detail.is_some() => field = Some(Field::ItemId),
                    "Quantity" if detail.is_some() => field = Some(Field::Quantity),
                    "Price" if detail.is_some() => {
                        field = Some(Field::Price);
                        let currency = currency_attr(&start)?;
                        set(&mut detail, &mut variation, |l| l.currency = currency);
                    }
                    "Ack" if detail.is_none() => field = Some(Field::Ack),
                    "ShortMessage" | "LongMessage" if detail.is_none() => {
                        field = Some(Field::Message)
                    }
                    _ => {}
                }
            }
            Event::Text(t) if field.is_some() => buf.push_str(&t.xml10_content()),
            Event::CData(t) if field.is_some() => buf.push_str(&t.xml10_content()),
            Event::GeneralRef(r) if field.is_some() => {
                if let Ok(Some(c)) = r.resolve_char_ref() {
                    buf.push(c);
                } else if let Some(s) = quick_xml::escape::resolve_predefined_entity(&r) {
                    buf.push_str(s);
                }
            }
            Event::End(end) => {
                let name = end.local_name();
                let name = name.as_ref();
                let value = buf.trim().to_string();
                match (field.take(), name) {
                    (Some(Field::Sku), "SKU") => set(&mut detail, &mut variation, |l| {
                        l.sku = value.clone();
                    }),
                    (Some(Field::ItemId), "ItemID") => set(&mut detail, &mut variation, |l| {
                        l.item_id = Some(value.clone()).filter(|v| !v.is_empty());
                    }),
                    (Some(Field::Price), "Price") => set(&mut detail, &mut variation, |l| {
                        l.price = Some(value.clone()).filter(|v| !v.is_empty());
                    }),
                    (Some(Field::Quantity), "Quantity") => {
                        let q = value.parse::<i64>().ok();
                        set(&mut detail, &mut variation, |l| l.quantity = q);
                    }
                    (Some(Field::Ack), "Ack") => ack = Some(value),
                    (Some(Field::Message), _) if !value.is_empty() => messages.push(value),
                    _ => {}
                }
                buf.clear();
                match name {
                    "Variation" => {
                        if let (Some(v), Some(d)) = (variation.take(), detail.as_mut()) {
                            d.variations.push(v);
                        }
                    }
                    "SKUDetails" => {
                        if let Some(d) = detail.take() {
                            finish_detail(d, &mut report);
                        }
                    }
                    _ => {}
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if ack.as_deref() == Some("Failure") {
        let why = if messages.is_empty() {
            "no message".to_string()
        } else {
            messages.join("; ")
        };
        return Err(ReportError::Failed(why));
    }
    Ok(report)
}

/// Applies `f` to the innermost open record.
fn set(
    detail: &mut Option<Open>,
    variation: &mut Option<ReportLine>,
    f: impl FnOnce(&mut ReportLine),
) {
    if let Some(v) = variation.as_mut() {
        f(v);
    } else if let Some(d) = detail.as_mut() {
        f(&mut d.line);
    }
}

fn currency_attr(start: &BytesStart<'_>) -> Result<Option<String>, ReportError> {
    for attr in start.attributes() {
        let attr = attr.map_err(|e| ReportError::Xml(e.to_string()))?;
        if attr.key.local_name().as_ref() == "currencyID" {
            let v = attr
                .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .map_err(|e| ReportError::Xml(e.to_string()))?;
            return Ok(Some(v.trim().to_string()));
        }
    }
    Ok(None)
}

fn finish_detail(open: Open, report: &mut Report) {
    let Open { line, variations } = open;
    if variations.is_empty() {
        if !line.sku.is_empty() {
            report.lines.push(line);
        } else {
            report.skipped.push(format!(
                "SKUDetails without SKU (ItemID {})",
                line.item_id.as_deref().unwrap_or("?")
            ));
        }
        return;
    }
    for mut v in variations {
        if v.sku.is_empty() {
            report.skipped.push(format!(
                "Variation without SKU (ItemID {})",
                line.item_id.as_deref().unwrap_or("?")
            ));
            continue;
        }
        if v.item_id.is_none() {
            v.item_id.clone_from(&line.item_id);
        }
        report.lines.push(v);
    }
}

/// Writes a report in the shape eBay delivers (for the simulator).
pub fn write(lines: &[ReportLine], timestamp: &str) -> String {
    use quick_xml::escape::escape;
    let mut xml = String::with_capacity(128 + lines.len() * 160);
    xml.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    xml.push_str("<BulkDataExchangeResponses xmlns=\"urn:ebay:apis:eBLBaseComponents\">\n");
    xml.push_str("<ActiveInventoryReport>\n");
    xml.push_str("<Ack>Success</Ack>\n<Version>1355</Version>\n");
    xml.push_str(&format!("<Timestamp>{}</Timestamp>\n", escape(timestamp)));
    for l in lines {
        xml.push_str("<SKUDetails>");
        xml.push_str(&format!("<SKU>{}</SKU>", escape(l.sku.as_str())));
        if let Some(p) = &l.price {
            match &l.currency {
                Some(c) => xml.push_str(&format!(
                    "<Price currencyID=\"{}\">{}</Price>",
                    escape(c.as_str()),
                    escape(p.as_str())
                )),
                None => xml.push_str(&format!("<Price>{}</Price>", escape(p.as_str()))),
            }
        }
        if let Some(q) = l.quantity {
            xml.push_str(&format!("<Quantity>{q}</Quantity>"));
        }
        if let Some(id) = &l.item_id {
            xml.push_str(&format!("<ItemID>{}</ItemID>", escape(id.as_str())));
        }
        xml.push_str("</SKUDetails>\n");
    }
    xml.push_str("</ActiveInventoryReport>\n</BulkDataExchangeResponses>\n");
    xml
}

/// Packs an XML document into a ZIP with one deflated entry named `file_name`.
pub fn zip(xml: &str, file_name: &str) -> Result<Vec<u8>, ReportError> {
    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    writer
        .start_file(file_name, options)
        .map_err(|e| ReportError::Archive(e.to_string()))?;
    writer
        .write_all(xml.as_bytes())
        .map_err(|e| ReportError::Archive(e.to_string()))?;
    let cursor = writer
        .finish()
        .map_err(|e| ReportError::Archive(e.to_string()))?;
    Ok(cursor.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<BulkDataExchangeResponses xmlns="urn:ebay:apis:eBLBaseComponents">
  <ActiveInventoryReport>
    <Ack>Success</Ack>
    <Version>1355</Version>
    <SKUDetails>
      <ItemID>110000000001</ItemID>
      <Price currencyID="EUR">19.9</Price>
      <Quantity>7</Quantity>
      <SKU>A&amp;B-1</SKU>
    </SKUDetails>
    <SKUDetails>
      <ItemID>110000000002</ItemID>
      <Quantity>3</Quantity>
      <SKU>PARENT</SKU>
      <Variations>
        <Variation>
          <Price currencyID="EUR">21.0</Price>
          <Quantity>2</Quantity>
          <SKU>PARENT-RED</SKU>
          <VariationSpecifics><NameValueList><Name>Colour</Name><Value>Red</Value></NameValueList></VariationSpecifics>
        </Variation>
        <Variation><Price currencyID="EUR">22</Price><Quantity>1</Quantity></Variation>
      </Variations>
    </SKUDetails>
    <SKUDetails><ItemID>110000000003</ItemID><Price currencyID="EUR">5.00</Price></SKUDetails>
  </ActiveInventoryReport>
</BulkDataExchangeResponses>"#;

    #[test]
    fn parses_lines_variations_and_skips_what_has_no_sku() {
        let r = parse(SAMPLE.as_bytes()).unwrap();
        assert_eq!(
            r.lines,
            vec![
                ReportLine {
                    sku: "A&B-1".into(),
                    item_id: Some("110000000001".into()),
                    price: Some("19.9".into()),
                    currency: Some("EUR".into()),
                    quantity: Some(7),
                },
                ReportLine {
                    sku: "PARENT-RED".into(),
                    item_id: Some("110000000002".into()),
                    price: Some("21.0".into()),
                    currency: Some("EUR".into()),
                    quantity: Some(2),
                },
            ]
        );
        assert_eq!(r.skipped.len(), 2, "{:?}", r.skipped);
        assert!(r.skipped[1].contains("110000000003"));
    }

    #[test]
    fn failure_ack_is_an_error() {
        let xml = r#"<ActiveInventoryReport xmlns="urn:ebay:apis:eBLBaseComponents"><Ack>Failure</Ack>
            <Errors><ShortMessage>Report failed.</ShortMessage></Errors></ActiveInventoryReport>"#;
        assert_eq!(
            parse(xml.as_bytes()),
            Err(ReportError::Failed("Report failed.".into()))
        );
    }

    #[test]
    fn broken_xml_is_an_error() {
        assert!(matches!(
            parse(b"<ActiveInventoryReport><SKUDetails><SKU>x</Price>"),
            Err(ReportError::Xml(_))
        ));
    }

    #[test]
    fn round_trips_through_zip_gzip_and_plain() {
        let lines = vec![ReportLine {
            sku: "S<1>".into(),
            item_id: Some("1".into()),
            price: Some("1.50".into()),
            currency: Some("EUR".into()),
            quantity: Some(4),
        }];
        let xml = write(&lines, "2026-01-01T00:00:00Z");
        let zipped = zip(&xml, "report.xml").unwrap();
        assert_eq!(parse(&unpack(&zipped).unwrap()).unwrap().lines, lines);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(xml.as_bytes()).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(parse(&unpack(&gz).unwrap()).unwrap().lines, lines);
        assert_eq!(
            parse(&unpack(xml.as_bytes()).unwrap()).unwrap().lines,
            lines
        );
        assert!(matches!(
            unpack(b"PK\x03\x04garbage"),
            Err(ReportError::Archive(_))
        ));
    }
}
