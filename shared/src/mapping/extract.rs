//! One pass over a raw page: each record's mapped fields land in slots; everything else is skipped
//! without being built. Shape problems never fail the page: a record that is not an object, or a
//! nested field that is not what the map expects, simply leaves its slots empty.
//!
//! Pages are walked with sonic-rs's serde `Deserializer`, which reads them faster than serde_json
//! (docs/performance.md); the slots hold `serde_json` values. It checks less than serde_json in
//! what it skips (an unread `\u` escape takes the next four bytes unchecked), so every page it
//! walks has passed serde_json first: collect checks each page as it arrives, replay each file it
//! reads. The walk itself checks that the page is UTF-8, which sonic-rs does not.

use std::borrow::Cow;
use std::fmt;

use serde::de::{
    DeserializeSeed, Deserializer, Error as _, IgnoredAny, MapAccess, SeqAccess, Visitor,
};
use serde_json::Value;
use sonic_rs::LazyValue;

use super::map::PathTree;

/// Reads one record into `slots`; yields whether it was a JSON object.
struct RecordSeed<'a> {
    tree: &'a PathTree,
    slots: &'a mut [Option<Value>],
}

impl<'de> DeserializeSeed<'de> for RecordSeed<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_any(self)
    }
}

/// A key, borrowed from the input when it has no escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// The element selectors of a list path: `nodes[first]`, `nodes[last]`.
const FIRST: &str = "[first]";
const LAST: &str = "[last]";

/// Reads one list element, kept as its raw text, into the slots under `tree`.
fn read_raw(
    tree: &PathTree,
    raw: &LazyValue,
    slots: &mut [Option<Value>],
) -> Result<(), sonic_rs::Error> {
    let mut deserializer = sonic_rs::Deserializer::from_str(raw.as_raw_str());
    RecordSeed { tree, slots }.deserialize(&mut deserializer)?;
    Ok(())
}

/// A `[first]` or `[last]` list element that could not be read. The message has no place of its
/// own (the element's error counts from the element's start, and quotes it), so the error takes
/// the place in the page where the list ends.
const ELEMENT_FAULT: &str = "a list element could not be read";

/// Fills the slots under `tree` from an already-built value (a path that is both read whole and
/// read into, such as `data` and `data.queryName`).
fn fill_from_value(tree: &PathTree, value: &Value, slots: &mut [Option<Value>]) {
    for (key, child) in &tree.children {
        let inner = match key.as_str() {
            FIRST => value.as_array().and_then(|list| list.first()),
            LAST => value.as_array().and_then(|list| list.last()),
            _ => value.get(key),
        };
        if let Some(inner) = inner {
            if let Some(slot) = child.slot {
                slots[slot] = Some(inner.clone());
            }
            fill_from_value(child, inner, slots);
        }
    }
}

impl<'de> Visitor<'de> for RecordSeed<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        while let Some(Key(key)) = map.next_key::<Key>()? {
            match self.tree.children.get(key.as_ref()) {
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
                Some(child) if child.children.is_empty() => {
                    let value: Value = map.next_value()?;
                    if let Some(slot) = child.slot {
                        self.slots[slot] = Some(value);
                    }
                }
                Some(child) if child.slot.is_some() => {
                    let value: Value = map.next_value()?;
                    fill_from_value(child, &value, self.slots);
                    self.slots[child.slot.expect("checked")] = Some(value);
                }
                Some(child) => {
                    map.next_value_seed(RecordSeed {
                        tree: child,
                        slots: &mut *self.slots,
                    })?;
                }
            }
        }
        Ok(true)
    }

    /// A list read into: its first element (`[first]`) and its last (`[last]`, known only when
    /// the list ends, so each element is kept unread until the next one arrives).
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        let first = self.tree.children.get(FIRST);
        let last = self.tree.children.get(LAST);
        if first.is_none() && last.is_none() {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            return Ok(false);
        }
        let mut latest: Option<LazyValue<'de>> = None;
        let mut index = 0usize;
        loop {
            let element = match (index, first) {
                (0, Some(tree)) => {
                    let raw: Option<LazyValue<'de>> = seq.next_element()?;
                    if let Some(raw) = &raw {
                        read_raw(tree, raw, self.slots)
                            .map_err(|_| A::Error::custom(ELEMENT_FAULT))?;
                    }
                    raw
                }
                _ => seq.next_element()?,
            };
            match element {
                Some(raw) => latest = Some(raw),
                None => break,
            }
            index += 1;
        }
        if let (Some(tree), Some(raw)) = (last, latest) {
            read_raw(tree, &raw, self.slots).map_err(|_| A::Error::custom(ELEMENT_FAULT))?;
        }
        Ok(false)
    }

    fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_str<E>(self, _: &str) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E>(self) -> Result<bool, E> {
        Ok(false)
    }
}

/// What a record of a page was, as read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shape {
    Object,
    /// A value other than an object.
    NotObject,
    /// Valid JSON its reader cannot read (a `\u` escape that is not a whole UTF-16 character, a
    /// number past a 64-bit float's range), where the column of the record says: its slots
    /// empty. Collect's check (serde_json) lets such text through.
    Unreadable {
        column: usize,
    },
}

/// Called for each record of the list: its index, its shape, and its slots (which it may take:
/// they are cleared before the next record).
pub(crate) type OnRecord<'a> = dyn FnMut(u32, Shape, &mut [Option<Value>]) + 'a;

/// Walks `page`, a page object, to the end: reads each record of the list under `list_key` into
/// `slots` and hands them to `on_record`. Whether the list was found; the error names what was
/// wrong and where, never the page's text.
pub(crate) fn walk_page(
    page: &[u8],
    list_key: &str,
    tree: &PathTree,
    slots: &mut Vec<Option<Value>>,
    on_record: &mut OnRecord,
) -> Result<bool, String> {
    // sonic-rs reads `&str` input as UTF-8 without checking it, and checks `&[u8]` input only in
    // the strings it reads: the whole page is checked first, once.
    let text =
        std::str::from_utf8(page).map_err(|e| format!("not UTF-8 at byte {}", e.valid_up_to()))?;
    let mut handed = 0u32;
    let walked = walk(
        text,
        list_key,
        tree,
        slots,
        &mut |index, shape, slots| {
            handed = index + 1;
            on_record(index, shape, slots)
        },
        None,
    );
    match walked {
        Ok(found) => Ok(found),
        // One record its reader cannot read fails the walk: the page is walked again record by
        // record from that one on, each read alone, so only such a record goes unread. A page
        // that is itself broken fails again, as before.
        Err(first) => {
            let mut past = false;
            walk(
                text,
                list_key,
                tree,
                slots,
                &mut |index, shape, slots| {
                    past = true;
                    on_record(index, shape, slots)
                },
                Some(handed),
            )
            // Where the walk record by record got past the record the first walk failed on, the
            // page breaks further on: its own error says where.
            .map_err(|again| fault(if past { &again } else { &first }))
        }
    }
}

/// [`walk_page`]'s walk of UTF-8 `text`: in one pass, or (`by_record_from`) each record from that
/// index on read alone, those before it skipped.
fn walk(
    text: &str,
    list_key: &str,
    tree: &PathTree,
    slots: &mut Vec<Option<Value>>,
    on_record: &mut OnRecord,
    by_record_from: Option<u32>,
) -> Result<bool, sonic_rs::Error> {
    let mut deserializer = sonic_rs::Deserializer::from_str(text);
    PageSeed {
        list_key,
        tree,
        slots,
        on_record,
        by_record_from,
    }
    .deserialize(&mut deserializer)
    .and_then(|found| deserializer.end().map(|()| found))
}

/// What was wrong with a page and where, never its text (a sonic-rs error's `Display` quotes the
/// input around the fault, so it is never shown).
fn fault(e: &sonic_rs::Error) -> String {
    // Our own refusal: its words, which hold nothing of the page.
    if e.to_string().contains(LIST_TWICE) {
        return format!(
            "its list comes twice (at line {} column {}): collect counted the last one's records",
            e.line(),
            e.column()
        );
    }
    let kind = match e.classify() {
        sonic_rs::error::Category::Eof => "cut off",
        sonic_rs::error::Category::Syntax => "invalid JSON",
        _ => "unexpected shape",
    };
    format!("{kind} at line {} column {}", e.line(), e.column())
}

/// The walk's refusal of a page whose list's key comes twice.
const LIST_TWICE: &str = "the list's key comes twice";

/// Walks a page object, finds the list under `list_key` and reads each record.
struct PageSeed<'a, 'h> {
    list_key: &'a str,
    tree: &'a PathTree,
    slots: &'a mut Vec<Option<Value>>,
    on_record: &'a mut OnRecord<'h>,
    by_record_from: Option<u32>,
}

impl<'de> DeserializeSeed<'de> for PageSeed<'_, '_> {
    /// Whether the list was found.
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for PageSeed<'_, '_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a page object with a `{}` list", self.list_key)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let (mut found, mut seen) = (false, false);
        while let Some(Key(key)) = map.next_key::<Key>()? {
            if key == self.list_key {
                // Collect counted the last of repeated keys' records; reading each list would
                // take more records than it counted, and the first alone others.
                if std::mem::replace(&mut seen, true) {
                    return Err(A::Error::custom(LIST_TWICE));
                }
                found = map.next_value_seed(ListSeed {
                    tree: self.tree,
                    slots: &mut *self.slots,
                    on_record: &mut *self.on_record,
                    by_record_from: self.by_record_from,
                })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

struct ListSeed<'a, 'h> {
    tree: &'a PathTree,
    slots: &'a mut Vec<Option<Value>>,
    on_record: &'a mut OnRecord<'h>,
    by_record_from: Option<u32>,
}

impl<'de> DeserializeSeed<'de> for ListSeed<'_, '_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ListSeed<'_, '_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of records")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        let mut index = 0u32;
        loop {
            self.slots.iter_mut().for_each(|s| *s = None);
            let shape = match self.by_record_from {
                None => match seq.next_element_seed(RecordSeed {
                    tree: self.tree,
                    slots: self.slots,
                })? {
                    Some(true) => Shape::Object,
                    Some(false) => Shape::NotObject,
                    None => return Ok(true),
                },
                Some(from) => match seq.next_element::<LazyValue<'de>>()? {
                    None => return Ok(true),
                    Some(_) if index < from => {
                        index += 1;
                        continue;
                    }
                    Some(raw) => read_alone(self.tree, raw.as_raw_str(), self.slots)
                        .ok_or_else(|| A::Error::custom("invalid JSON"))?,
                },
            };
            (self.on_record)(index, shape, &mut self.slots[..]);
            index += 1;
        }
    }
}

/// One record read alone from its text; one its reader cannot read leaves its slots empty.
/// `None` where the text is not JSON (sonic-rs skips a record's text without checking all of it,
/// so serde_json tells).
fn read_alone(tree: &PathTree, record: &str, slots: &mut [Option<Value>]) -> Option<Shape> {
    let mut deserializer = sonic_rs::Deserializer::from_str(record);
    let read = RecordSeed {
        tree,
        slots: &mut *slots,
    }
    .deserialize(&mut deserializer)
    .and_then(|is_object| deserializer.end().map(|()| is_object));
    match read {
        Ok(true) => Some(Shape::Object),
        Ok(false) => Some(Shape::NotObject),
        Err(e) => {
            slots.iter_mut().for_each(|s| *s = None);
            serde_json::from_str::<IgnoredAny>(record).ok()?;
            Some(Shape::Unreadable { column: e.column() })
        }
    }
}

/// Whether `n` is a whole number from 2^53 on read as a float (one past 64 bits, or written with a
/// fraction or exponent): not every such number is a 64-bit float, so its digits may be rounded.
pub(crate) fn is_rounded_whole(n: &serde_json::Number) -> bool {
    /// 2^53: from here on, not every whole number is a 64-bit float.
    const F64_EXACT: f64 = 9_007_199_254_740_992.0;
    n.is_f64()
        && n.as_f64()
            .is_some_and(|f| f.fract() == 0.0 && f.abs() >= F64_EXACT)
}

/// A value as text: a text, a number or a boolean (what an id, a key or a label may be); not a
/// whole number a JSON reader holds rounded ([`is_rounded_whole`]): its text would be another's.
pub(crate) fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) if is_rounded_whole(n) => None,
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}
