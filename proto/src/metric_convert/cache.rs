//! The converter's series cache: from what identifies a series in OTLP (the
//! resource's `job`/`instance` and scope labels, the series name and the
//! data point's raw attributes) to the series' Prometheus labels and a
//! number, so that a point of a known series is converted without building,
//! sanitising, sorting and hashing its label strings.

use std::sync::Arc;

use crate::otlp::common::v1::{KeyValue, any_value};
use crate::{Labels, SeriesRef};

/// Bytes of keys kept before the cache starts over (the next points of each
/// series then fill it again).
const MAX_KEY_BYTES: usize = 64 << 20;

/// Separators in keys: bytes that never occur in UTF-8 text.
const END_NAME: u8 = 0xff;
const END_VALUE: u8 = 0xfe;

/// Known series by key; see the module docs.
#[derive(Debug)]
pub struct SeriesCache {
    map: foldhash::HashMap<Box<[u8]>, Arc<SeriesRef>>,
    key_bytes: usize,
    max_key_bytes: usize,
    next_id: u64,
    /// Resets because the cache was full.
    pub resets: u64,
}

impl Default for SeriesCache {
    fn default() -> Self {
        SeriesCache::with_max_key_bytes(MAX_KEY_BYTES)
    }
}

impl SeriesCache {
    /// A cache that starts over once its keys take `max_key_bytes`.
    pub fn with_max_key_bytes(max_key_bytes: usize) -> Self {
        SeriesCache {
            map: Default::default(),
            key_bytes: 0,
            max_key_bytes,
            next_id: 0,
            resets: 0,
        }
    }

    /// The series of `key`, made with `labels` and numbered when new.
    pub(crate) fn get_or_insert(
        &mut self,
        key: &[u8],
        labels: impl FnOnce() -> Labels,
    ) -> Arc<SeriesRef> {
        if let Some(s) = self.map.get(key) {
            return s.clone();
        }
        if self.key_bytes + key.len() > self.max_key_bytes {
            self.map = Default::default();
            self.key_bytes = 0;
            self.resets += 1;
        }
        self.next_id += 1;
        let series = Arc::new(SeriesRef {
            id: self.next_id,
            labels: labels(),
        });
        self.key_bytes += key.len();
        self.map.insert(key.into(), series.clone());
        series
    }

    /// A series the cache does not keep (its key does not cover it), under
    /// a number of its own.
    pub(crate) fn uncached(&mut self, labels: impl FnOnce() -> Labels) -> Arc<SeriesRef> {
        self.next_id += 1;
        Arc::new(SeriesRef {
            id: self.next_id,
            labels: labels(),
        })
    }

    /// Series known.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Appends labels (already made) to a key.
pub(crate) fn key_labels(key: &mut Vec<u8>, labels: &Labels) {
    for (name, value) in labels {
        key.extend_from_slice(name.as_bytes());
        key.push(END_NAME);
        key.extend_from_slice(value.as_bytes());
        key.push(END_VALUE);
    }
}

/// Appends a series name to a key.
pub(crate) fn key_name(key: &mut Vec<u8>, name: &str) {
    key.push(END_NAME);
    key.extend_from_slice(name.as_bytes());
    key.push(END_NAME);
}

/// Appends a point's raw attributes to a key; false for attributes the key
/// does not cover (arrays and maps, whose label value is their JSON).
pub(crate) fn key_attributes(key: &mut Vec<u8>, attrs: &[KeyValue]) -> bool {
    for kv in attrs {
        key.extend_from_slice(kv.key.as_bytes());
        key.push(END_NAME);
        match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
            None => key.push(b'n'),
            Some(any_value::Value::StringValue(s)) => {
                key.push(b's');
                key.extend_from_slice(s.as_bytes());
            }
            Some(any_value::Value::BoolValue(b)) => key.extend_from_slice(&[b'b', u8::from(*b)]),
            Some(any_value::Value::IntValue(i)) => {
                key.push(b'i');
                key.extend_from_slice(&i.to_le_bytes());
            }
            Some(any_value::Value::DoubleValue(d)) => {
                key.push(b'd');
                key.extend_from_slice(&d.to_bits().to_le_bytes());
            }
            Some(any_value::Value::BytesValue(b)) => {
                key.push(b'y');
                key.extend_from_slice(&(b.len() as u64).to_le_bytes());
                key.extend_from_slice(b);
            }
            // Arrays, maps and dictionary references: their label value
            // is made elsewhere.
            Some(_) => return false,
        }
        key.push(END_VALUE);
    }
    true
}
