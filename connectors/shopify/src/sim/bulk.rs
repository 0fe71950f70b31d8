//! The simulator's bulk query runner: parses the query handed to `bulkOperationRunQuery`
//! with the GraphQL parser, checks Shopify's bulk rules (a top-level connection, at most
//! five connections, nesting depth two), and writes the JSONL result the way Shopify does:
//! one line per node, with nested connection nodes on their own lines carrying
//! `__parentId` (the id of the enclosing variant). Selections are projected field by field
//! (aliases honoured), so the file holds exactly what the query asked for.

use async_graphql::Name;
use async_graphql::parser::parse_query;
use async_graphql::parser::types::{DocumentOperations, Field, Selection, SelectionSet};
use async_graphql::{Positioned, Value as GqlValue};
use omnisync_sdk::Money;
use serde_json::{Map, Value};

use super::catalog::{Catalog, Filter, Variant, gid};

/// What a finished bulk run produced.
#[derive(Debug)]
pub struct BulkResult {
    /// The JSONL text.
    pub jsonl: String,
    /// Lines written (objects).
    pub objects: u64,
    /// Top-level objects (variants).
    pub roots: u64,
}

/// The objects the runner can project.
#[derive(Clone, Copy)]
enum Obj<'a> {
    Variant(&'a Variant),
    Product(&'a Variant),
    Item(&'a Variant),
    Level(&'a Variant, &'a str, i64),
    Location(&'a str),
}

impl Obj<'_> {
    fn type_name(&self) -> &'static str {
        match self {
            Obj::Variant(_) => "ProductVariant",
            Obj::Product(_) => "Product",
            Obj::Item(_) => "InventoryItem",
            Obj::Level(..) => "InventoryLevel",
            Obj::Location(_) => "Location",
        }
    }
}

struct Runner<'a> {
    catalog: &'a Catalog,
    lines: String,
    objects: u64,
}

/// Checks and runs a bulk query against the catalog. `Err` is the message of a
/// `userErrors` entry (code `INVALID`).
pub fn run(query: &str, catalog: &Catalog) -> Result<BulkResult, String> {
    let doc = parse_query(query).map_err(|e| format!("Invalid bulk query: {e}"))?;
    let selection = match &doc.operations {
        DocumentOperations::Single(op) => &op.node.selection_set,
        DocumentOperations::Multiple(ops) if ops.len() == 1 => match ops.values().next() {
            Some(op) => &op.node.selection_set,
            None => return Err("Invalid bulk query: no operation".into()),
        },
        DocumentOperations::Multiple(_) => {
            return Err("Invalid bulk query: exactly one operation is allowed".into());
        }
    };
    let roots = fields(&selection.node)?;
    let [root] = roots.as_slice() else {
        return Err("Bulk queries must contain exactly one top-level field".into());
    };
    if root.name.node.as_str() != "productVariants" {
        return Err(format!(
            "Bulk queries on `{}` are not supported by the simulator (only productVariants)",
            root.name.node
        ));
    }
    let node_sel = connection_nodes(root)?;
    let nested = count_connections(&node_sel.node)?;
    if nested + 1 > 5 {
        return Err("Bulk queries cannot contain more than 5 connections".into());
    }
    let filter = Filter::parse(string_arg(root, "query").as_deref());
    let mut runner = Runner {
        catalog,
        lines: String::new(),
        objects: 0,
    };
    let mut roots_written = 0u64;
    let mut after = 0u64;
    loop {
        let (page, more) = catalog.page(after, 1000, &filter);
        for v in &page {
            let parent = gid("ProductVariant", v.id);
            let mut children = Vec::new();
            let line =
                runner.project(Obj::Variant(v), &node_sel.node, &parent, 1, &mut children)?;
            runner.push_line(line);
            roots_written += 1;
            for child in children {
                runner.push_line(child);
            }
            after = v.id;
        }
        if !more {
            break;
        }
    }
    Ok(BulkResult {
        jsonl: runner.lines,
        objects: runner.objects,
        roots: roots_written,
    })
}

/// The plain fields of a selection set (fragments are refused).
fn fields(set: &SelectionSet) -> Result<Vec<&Field>, String> {
    set.items
        .iter()
        .map(|s| match &s.node {
            Selection::Field(f) => Ok(&f.node),
            _ => Err("Fragments are not supported by the simulator's bulk runner".to_string()),
        })
        .collect()
}

/// The node selection of a connection field: `edges { node { … } }` or `nodes { … }`.
fn connection_nodes(field: &Field) -> Result<&Positioned<SelectionSet>, String> {
    for f in fields(&field.selection_set.node)? {
        match f.name.node.as_str() {
            "nodes" => return Ok(&f.selection_set),
            "edges" => {
                for g in fields(&f.selection_set.node)? {
                    if g.name.node.as_str() == "node" {
                        return Ok(&g.selection_set);
                    }
                }
            }
            "pageInfo" => {
                return Err("pageInfo is not allowed in bulk queries".to_string());
            }
            _ => {}
        }
    }
    Err(format!(
        "Connection `{}` must select edges {{ node }} or nodes",
        field.name.node
    ))
}

/// Connections inside a variant's selection (only `inventoryLevels` exists); a connection
/// inside those would be depth three.
fn count_connections(set: &SelectionSet) -> Result<usize, String> {
    let mut n = 0;
    for f in fields(set)? {
        if f.name.node.as_str() == "inventoryLevels" {
            n += 1;
        } else if !f.selection_set.node.items.is_empty() {
            n += count_connections(&f.selection_set.node)?;
        }
    }
    Ok(n)
}

/// An argument's value; bulk queries take no variables, so it is constant or absent.
fn const_arg(field: &Field, name: &str) -> Option<GqlValue> {
    field.get_argument(name)?.node.clone().into_const()
}

fn string_arg(field: &Field, name: &str) -> Option<String> {
    match const_arg(field, name)? {
        GqlValue::String(s) => Some(s),
        _ => None,
    }
}

fn names_arg(field: &Field) -> Result<Vec<String>, String> {
    match const_arg(field, "names") {
        Some(GqlValue::List(items)) => items
            .iter()
            .map(|i| match i {
                GqlValue::String(s) => Ok(s.clone()),
                _ => Err("quantities(names:) expects strings".to_string()),
            })
            .collect(),
        Some(GqlValue::String(s)) => Ok(vec![s]),
        _ => Err("Field 'quantities' is missing required arguments: names".to_string()),
    }
}

fn key(field: &Field) -> &Name {
    field.alias.as_ref().map_or(&field.name.node, |a| &a.node)
}

impl Runner<'_> {
    fn push_line(&mut self, line: Map<String, Value>) {
        self.lines.push_str(&Value::Object(line).to_string());
        self.lines.push('\n');
        self.objects += 1;
    }

    fn money(&self, minor: i64) -> Value {
        Value::String(Money::new(minor, self.catalog.currency).major_string())
    }

    /// Projects `sel` on `obj`. Nested connection nodes go to `children` with
    /// `__parentId = parent`.
    fn project(
        &mut self,
        obj: Obj<'_>,
        sel: &SelectionSet,
        parent: &str,
        depth: usize,
        children: &mut Vec<Map<String, Value>>,
    ) -> Result<Map<String, Value>, String> {
        let mut out = Map::new();
        for f in fields(sel)? {
            let name = f.name.node.as_str();
            let value = match (obj, name) {
                (_, "__typename") => Value::String(obj.type_name().to_string()),
                (Obj::Variant(v), "id") => Value::String(gid("ProductVariant", v.id)),
                (Obj::Variant(v), "sku") => Value::String(v.sku.clone()),
                (Obj::Variant(_), "barcode") => Value::Null,
                (Obj::Variant(v), "displayName" | "title") => Value::String(v.title.clone()),
                (Obj::Variant(v), "price") => self.money(v.price),
                (Obj::Variant(v), "compareAtPrice") => {
                    v.compare_at.map_or(Value::Null, |c| self.money(c))
                }
                (Obj::Variant(v), "inventoryQuantity") => {
                    Value::from(v.levels.values().sum::<i64>())
                }
                (Obj::Variant(v), "product") => Value::Object(self.project(
                    Obj::Product(v),
                    &f.selection_set.node,
                    parent,
                    depth,
                    children,
                )?),
                (Obj::Variant(v), "inventoryItem") => Value::Object(self.project(
                    Obj::Item(v),
                    &f.selection_set.node,
                    parent,
                    depth,
                    children,
                )?),
                (Obj::Product(v), "id") => Value::String(gid("Product", v.product)),
                (Obj::Product(v), "title") => Value::String(v.title.clone()),
                (Obj::Item(v), "id") => Value::String(gid("InventoryItem", v.item)),
                (Obj::Item(v), "sku") => Value::String(v.sku.clone()),
                (Obj::Item(_), "tracked") => Value::Bool(true),
                (Obj::Item(v), "inventoryLevels") => {
                    if depth >= 2 {
                        return Err(
                            "Bulk queries cannot nest connections deeper than 2 levels".into()
                        );
                    }
                    let node_sel = connection_nodes(f)?;
                    for (location, available) in &v.levels {
                        let mut grandchildren = Vec::new();
                        let mut line = self.project(
                            Obj::Level(v, location, *available),
                            &node_sel.node,
                            parent,
                            depth + 1,
                            &mut grandchildren,
                        )?;
                        line.insert("__parentId".into(), Value::String(parent.to_string()));
                        children.push(line);
                        children.extend(grandchildren);
                    }
                    // Connection fields do not appear on the parent line.
                    continue;
                }
                (Obj::Level(v, location, _), "id") => Value::String(format!(
                    "gid://shopify/InventoryLevel/{}?inventory_item_id={}",
                    location.rsplit('/').next().unwrap_or("0"),
                    v.item
                )),
                (Obj::Level(_, location, _), "location") => Value::Object(self.project(
                    Obj::Location(location),
                    &f.selection_set.node,
                    parent,
                    depth,
                    children,
                )?),
                (Obj::Level(_, _, available), "quantities") => {
                    let names = names_arg(f)?;
                    let mut list = Vec::new();
                    for n in names {
                        let quantity = match n.as_str() {
                            "available" | "on_hand" => available,
                            _ => 0,
                        };
                        let mut q = Map::new();
                        for qf in fields(&f.selection_set.node)? {
                            let v = match qf.name.node.as_str() {
                                "name" => Value::String(n.clone()),
                                "quantity" => Value::from(quantity),
                                "__typename" => Value::String("InventoryQuantity".into()),
                                other => {
                                    return Err(format!(
                                        "Field '{other}' doesn't exist on type 'InventoryQuantity'"
                                    ));
                                }
                            };
                            q.insert(key(qf).to_string(), v);
                        }
                        list.push(Value::Object(q));
                    }
                    Value::Array(list)
                }
                (Obj::Location(location), "id") => Value::String(location.to_string()),
                (Obj::Location(location), "name") => Value::String(format!(
                    "Location {}",
                    location.rsplit('/').next().unwrap_or("?")
                )),
                (obj, other) => {
                    return Err(format!(
                        "Field '{other}' doesn't exist on type '{}'",
                        obj.type_name()
                    ));
                }
            };
            out.insert(key(f).to_string(), value);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use omnisync_sdk::sim::SimRecord;
    use omnisync_sdk::{Currency, Offer};
    use std::collections::BTreeMap;

    fn catalog() -> Catalog {
        let mut c = Catalog::new(Currency::NOK, vec![gid("Location", 1), gid("Location", 2)]);
        c.seed(vec![SimRecord {
            sku: "A".into(),
            title: "Shirt".into(),
            offer: Offer {
                price: Money::new(9990, Currency::NOK),
                sale: Some(Money::new(7990, Currency::NOK)),
            },
            stock: BTreeMap::from([(gid("Location", 1), 4), (gid("Location", 2), 1)]),
        }]);
        c
    }

    #[test]
    fn writes_parent_and_child_lines() {
        let r = run(crate::bulk::BULK_QUERY, &catalog()).unwrap();
        assert_eq!(r.roots, 1);
        assert_eq!(r.objects, 3);
        let lines: Vec<Value> = r
            .jsonl
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["price"], "79.90");
        assert_eq!(lines[0]["compareAtPrice"], "99.90");
        assert!(lines[0]["inventoryItem"].get("inventoryLevels").is_none());
        assert_eq!(lines[1]["__parentId"], lines[0]["id"]);
        assert_eq!(lines[1]["quantities"][0]["quantity"], 4);
    }

    #[test]
    fn refuses_what_shopify_refuses() {
        let c = catalog();
        assert!(run("{ shop { name } }", &c).is_err());
        assert!(run("{ productVariants { edges { node { nope } } } }", &c).is_err());
        assert!(
            run(
                "{ productVariants { pageInfo { hasNextPage } edges { node { id } } } }",
                &c
            )
            .is_err()
        );
        assert!(run("not graphql", &c).is_err());
        let aliased = run("{ productVariants { nodes { code: sku } } }", &c).unwrap();
        assert!(aliased.jsonl.contains("\"code\":\"A\""));
    }
}
