//! Vendor pages are read with sonic-rs: its SIMD scanning skips what the connector does not read
//! (most of a page) faster than serde_json, and its serde `Deserializer` drives the same seeds.

/// What was wrong with a JSON text and where, never the text itself (a vendor's data stays out of
/// errors and logs): "cut off at line 1 column 18".
pub(crate) fn fault(e: &sonic_rs::Error) -> String {
    let kind = match e.classify() {
        sonic_rs::error::Category::Eof => "cut off",
        sonic_rs::error::Category::Syntax => "invalid JSON",
        _ => "unexpected shape",
    };
    format!("{kind} at line {} column {}", e.line(), e.column())
}
