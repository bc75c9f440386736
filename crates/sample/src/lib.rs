//! Workbook bodies shaped like real dashboard definitions: sheets of visuals, each with a query
//! (dimensions, measures, filters, sort), an encoding, a format and a position, words drawn from
//! a business vocabulary and numbers of every size. They compress about as well as real
//! dashboard JSON does (several times, not the hundreds of times a repeated character does), so
//! what Folio's benchmark and size tests measure of compression and deltas holds for real use.
//! The same `(name, seed, size)` always gives the same body.

use serde_json::{Value, json};

#[rustfmt::skip]
const WORDS: &[&str] = &[
    "revenue", "margin", "orders", "customers", "region", "country", "city", "segment", "channel",
    "product", "category", "brand", "supplier", "warehouse", "shipment", "returns", "discount",
    "quantity", "price", "cost", "profit", "forecast", "target", "budget", "actual", "variance",
    "quarter", "month", "week", "day", "year", "fiscal", "calendar", "growth", "churn", "retention",
    "cohort", "funnel", "conversion", "session", "visit", "campaign", "lead", "opportunity",
    "pipeline", "deal", "account", "contract", "renewal", "invoice", "payment", "balance", "ledger",
    "employee", "department", "headcount", "salary", "tenure", "hiring", "attrition", "store",
    "inventory", "stock", "backorder", "lead time", "on time", "late", "express", "standard",
    "north", "south", "east", "west", "central", "emea", "apac", "americas", "online", "retail",
    "wholesale", "partner", "direct", "enterprise", "small business", "consumer", "premium",
    "basic", "trial", "active", "inactive", "new", "returning", "top", "bottom", "average",
    "median", "total", "count", "distinct", "share", "rank", "index", "rate", "ratio", "score",
];
#[rustfmt::skip]
const VISUALS: &[&str] = &[
    "bar", "line", "area", "pie", "table", "pivot", "kpi", "map", "scatter", "treemap", "gauge",
    "histogram", "funnel", "heatmap",
];
#[rustfmt::skip]
const AGGREGATES: &[&str] = &["sum", "avg", "min", "max", "count", "countd", "median"];
#[rustfmt::skip]
const OPERATORS: &[&str] = &["=", "!=", "<", "<=", ">", ">=", "in", "between", "contains"];
#[rustfmt::skip]
const COLOURS: &[&str] = &[
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

/// A small deterministic generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len())]
    }

    /// Between `min` and `min + spread - 1` words.
    fn some_words(&mut self, min: usize, spread: usize) -> String {
        let n = min + self.below(spread);
        self.words(n)
    }

    fn words(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| self.pick(WORDS))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn field(&mut self) -> String {
        format!("{}_{}", self.pick(WORDS), self.pick(WORDS)).replace(' ', "_")
    }

    fn number(&mut self) -> Value {
        match self.below(4) {
            0 => json!(self.below(100)),
            1 => json!(self.below(1_000_000)),
            2 => json!((self.next() % 10_000_000) as f64 / 100.0),
            _ => json!(-((self.below(50_000)) as i64)),
        }
    }
}

fn visual(r: &mut Rng, n: usize) -> Value {
    let dims: Vec<String> = (0..1 + r.below(3)).map(|_| r.field()).collect();
    let measures: Vec<Value> = (0..1 + r.below(3))
        .map(|_| json!({"field": r.field(), "aggregate": r.pick(AGGREGATES), "label": r.words(2)}))
        .collect();
    let filters: Vec<Value> = (0..r.below(4))
        .map(|_| {
            let value = if r.below(2) == 0 {
                r.number()
            } else {
                json!(r.some_words(1, 2))
            };
            json!({"field": r.field(), "op": r.pick(OPERATORS), "value": value})
        })
        .collect();
    let limit = [10, 25, 50, 100, 500, 1000][r.below(6)];
    let prefix = ["", "$", "€", "£"][r.below(4)];
    let suffix = ["", "%", " units", "k"][r.below(4)];
    json!({
        "id": format!("v{n}-{:x}", r.next() & 0xffff_ffff),
        "type": r.pick(VISUALS),
        "title": r.some_words(2, 4),
        "description": r.some_words(0, 12),
        "query": {
            "source": format!("ds-{}", r.field()),
            "dimensions": dims,
            "measures": measures,
            "filters": filters,
            "sort": [{"field": r.field(), "descending": r.below(2) == 0}],
            "limit": limit,
        },
        "encoding": {
            "x": r.field(),
            "y": r.field(),
            "color": r.pick(COLOURS),
            "stacked": r.below(3) == 0,
        },
        "format": {
            "decimals": r.below(4),
            "prefix": prefix,
            "suffix": suffix,
            "thresholds": (0..r.below(4)).map(|_| r.number()).collect::<Vec<_>>(),
        },
        "position": {"x": r.below(12), "y": r.below(40), "w": 1 + r.below(12), "h": 1 + r.below(8)},
    })
}

/// A workbook (`{"name", "content"}`) of about `size` bytes of JSON (a little more, never less
/// than one visual), its content shaped like a dashboard definition and varied by `seed`.
pub fn workbook(name: &str, seed: u64, size: usize) -> Value {
    let mut r = Rng(seed ^ 0x5eed_f011_0000_0000);
    let font = ["Inter", "Roboto", "Source Sans"][r.below(3)];
    let refresh = [0, 60, 300, 900, 3600][r.below(5)];
    let mut v = json!({
        "name": name,
        "content": {
            "title": r.words(3),
            "owner": format!("{}.{}", r.pick(WORDS), r.pick(WORDS)).replace(' ', "-"),
            "theme": {"palette": COLOURS, "font": font},
            "refresh_seconds": refresh,
            "parameters": (0..1 + r.below(3)).map(|_| json!({"name": r.field(), "default": r.number()})).collect::<Vec<_>>(),
            "sheets": [],
        }
    });
    let mut len = serde_json::to_vec(&v).map_or(0, |b| b.len());
    let mut n = 0;
    while len < size || n == 0 {
        let sheets = v["content"]["sheets"].as_array_mut().expect("an array");
        if sheets.is_empty() || r.below(8) == 0 {
            sheets.push(json!({"title": r.words(2), "visuals": []}));
        }
        let vis = visual(&mut r, n);
        len += serde_json::to_vec(&vis).map_or(0, |b| b.len()) + 1;
        if let Some(last) = sheets.last_mut() {
            last["visuals"].as_array_mut().expect("an array").push(vis);
        }
        n += 1;
    }
    v
}

/// The same workbook with one field changed: the title of its first visual (a user's small edit).
pub fn edited(workbook: &Value, title: &str) -> Value {
    let mut v = workbook.clone();
    if let Some(t) = v.pointer_mut("/content/sheets/0/visuals/0/title") {
        *t = json!(title);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(v: &Value) -> Vec<u8> {
        serde_json::to_vec(v).unwrap()
    }

    #[test]
    fn bodies_are_about_the_size_asked_and_the_same_for_the_same_seed() {
        for size in [512, 4096, 65_536, 2 << 20] {
            let b = bytes(&workbook("w", 7, size));
            assert!(
                b.len() >= size && b.len() < size + size / 4 + 2048,
                "{size}: {}",
                b.len()
            );
        }
        assert_eq!(workbook("w", 7, 4096), workbook("w", 7, 4096));
        assert_ne!(workbook("w", 7, 4096), workbook("w", 8, 4096));
    }

    #[test]
    fn bodies_compress_like_json_not_like_a_repeated_character() {
        for size in [4096, 2 << 20] {
            let b = bytes(&workbook("w", 3, size));
            let z = zstd::encode_all(&b[..], 3).unwrap();
            let ratio = b.len() as f64 / z.len() as f64;
            // Real dashboard JSON compresses some 3 to 10 times; a repeated character, hundreds.
            assert!((2.5..12.0).contains(&ratio), "{size}: {ratio:.1}x");
        }
        let padded = serde_json::to_vec(&json!({"pad": "x".repeat(4096)})).unwrap();
        let z = zstd::encode_all(&padded[..], 3).unwrap();
        assert!(
            padded.len() / z.len() > 50,
            "the old padding compressed away"
        );
    }

    #[test]
    fn bodies_are_nested_and_worded_like_dashboards() {
        let v = workbook("w", 1, 16_384);
        assert!(
            v.pointer("/content/sheets/0/visuals/0/query/measures/0/aggregate")
                .is_some()
        );
        let text = String::from_utf8(bytes(&v)).unwrap();
        let distinct: std::collections::BTreeSet<&str> = text
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .collect();
        assert!(distinct.len() > 200, "{} distinct words", distinct.len());
        let e = edited(&v, "a new title");
        assert_eq!(
            e["content"]["sheets"][0]["visuals"][0]["title"],
            "a new title"
        );
        assert_eq!(
            e["content"]["sheets"].as_array().unwrap()[1..],
            v["content"]["sheets"].as_array().unwrap()[1..]
        );
    }
}
