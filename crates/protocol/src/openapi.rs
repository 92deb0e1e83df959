//! OpenAPI schemas for the types whose wire form serde derives cannot describe: open enums
//! (any string, some values known) and amounts (a JSON number or a decimal string).

use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type};
use utoipa::openapi::{RefOr, schema::SchemaFormat};

/// A string of an open set: the known values are listed, others are accepted and kept.
pub(crate) fn open_enum_schema(known: &[&str]) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(SchemaType::new(Type::String))
        .description(Some(format!(
            "Open set: other values are accepted and kept. Known: {}.",
            known.join(", ")
        )))
        .examples(known.iter().take(1).map(|k| serde_json::Value::from(*k)))
        .into()
}

/// Pattern of an amount sent as a JSON string: optional `-`, digits, optional `.digits`.
pub const AMOUNT_STRING_PATTERN: &str = r"^-?[0-9]+(\.[0-9]+)?$";

impl utoipa::PartialSchema for crate::WireAmount {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(SchemaType::new(Type::Number))
                    .description(Some(
                        "A JSON number, read exactly from its literal (never through binary floating point).",
                    )),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(SchemaType::new(Type::String))
                    .format(Some(SchemaFormat::Custom("decimal".into())))
                    .pattern(Some(AMOUNT_STRING_PATTERN))
                    .description(Some("A plain decimal string, e.g. \"1060.74\".")),
            )
            .description(Some(
                "An exact amount in major units of its currency, as a JSON number or a decimal string.",
            ))
            .into()
    }
}

impl utoipa::ToSchema for crate::WireAmount {}
