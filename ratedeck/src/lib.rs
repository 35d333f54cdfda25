//! Rate decks: large prefix tables kept outside the RoutePlan (a CSV file), parsed into a compact
//! table for least-cost routing. Pure: the caller supplies the text.
//!
//! Format (docs/ratedecks.md): one row per line,
//! `prefix,trunk,cost[,priority[,weight[,strip[,prepend]]]]`; `#` starts a comment line, blank
//! lines are skipped, an optional header line starts with `prefix`. A prefix is an optional `+`
//! and 1 to [`MAX_PREFIX_DIGITS`] digits; several rows may share a prefix (one per trunk).
//!
//! Layout: one hash table per (prefix length, leading `+`) maps the prefix's digits, as an
//! integer, to the first of its rows in one flat array of 16-byte rows sorted by cost, priority
//! and weight. Trunk names and prepended digits are interned. A lookup tries each prefix length
//! present in the deck, longest first; a small bit filter (2 bytes per prefix, mostly in cache)
//! answers most lengths that have no such prefix without touching the large tables.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

/// Longest prefix a deck accepts, in digits (the digits of a prefix fit in a `u64`).
pub const MAX_PREFIX_DIGITS: usize = 18;
/// Most rows a deck may hold.
pub const MAX_ROWS: usize = 50_000_000;
/// Most distinct trunks a deck may name.
pub const MAX_TRUNKS: usize = u16::MAX as usize;
/// Longest text a row may prepend to the called number.
pub const MAX_PREPEND: usize = 32;

/// A cost in millionths of the deck's currency unit (per minute, by convention); at most
/// 4294.967295.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cost(pub u32);

impl Cost {
    /// Parses a non-negative decimal with at most 6 fractional digits.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("cost {text:?} is not a decimal number >= 0 with at most 6 decimals");
        let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
        if whole.is_empty() && fraction.is_empty()
            || fraction.len() > 6
            || !whole.bytes().all(|b| b.is_ascii_digit())
            || !fraction.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
        let mut micros: u64 = 0;
        for b in whole.bytes() {
            micros = micros * 10 + u64::from(b - b'0');
            if micros > u64::from(u32::MAX) {
                return Err(format!("cost {text:?} is above the maximum 4294.967295"));
            }
        }
        let mut scaled = micros * 1_000_000;
        let mut unit = 100_000;
        for b in fraction.bytes() {
            scaled += u64::from(b - b'0') * unit;
            unit /= 10;
        }
        u32::try_from(scaled)
            .map(Cost)
            .map_err(|_| format!("cost {text:?} is above the maximum 4294.967295"))
    }
}

impl fmt::Display for Cost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / 1_000_000;
        let fraction = self.0 % 1_000_000;
        if fraction == 0 {
            return write!(f, "{whole}");
        }
        let digits = format!("{fraction:06}");
        write!(f, "{whole}.{}", digits.trim_end_matches('0'))
    }
}

/// A malformed deck: the first problem found, with its line (counting from 1).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct DeckError {
    /// Line of the problem, counting from 1.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// One row of a deck, 16 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Row {
    cost: Cost,
    prepend: u32,
    trunk: u16,
    priority: u16,
    weight: u16,
    strip: u8,
    /// Whether this is the last row of its prefix.
    last: bool,
}

/// A multiplicative hasher for the `u64` keys (digits of a prefix): keys are not chosen by
/// callers, so a DoS-resistant hash buys nothing and costs time per lookup.
#[derive(Default, Clone, Copy)]
struct DigitsHasher(u64);

impl Hasher for DigitsHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, key: u64) {
        // Fibonacci hashing, rotated so that the high bits (the ones the table uses for its
        // control bytes) and the low bits (bucket index) both mix every digit.
        self.0 = (self.0 ^ key)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(26);
    }
}

type Table = HashMap<u64, u32, BuildHasherDefault<DigitsHasher>>;

/// The bit of `filter` (a power of two of bits) for `key` of table `table`.
fn filter_bit(filter: &[u64], table: usize, key: u64) -> usize {
    let mixed = (key ^ ((table as u64) << 58)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let bits = filter.len() * 64;
    (mixed >> 32) as usize & (bits - 1)
}

/// Index of the table of prefixes of `digits` digits, with or without a leading `+`.
fn table_index(digits: usize, plus: bool) -> usize {
    digits * 2 + usize::from(plus)
}

const TABLES: usize = (MAX_PREFIX_DIGITS + 1) * 2;

/// A parsed rate deck.
#[derive(Clone, Debug)]
pub struct RateDeck {
    tables: Vec<Table>,
    /// One bit per hash of (table, key), set for every prefix: a clear bit rules a prefix out.
    filter: Vec<u64>,
    rows: Vec<Row>,
    trunks: Vec<Box<str>>,
    prepends: Vec<Box<str>>,
    prefixes: usize,
}

/// One row of a matched prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeckRoute<'d> {
    /// Trunk the row offers the call to.
    pub trunk: &'d str,
    /// The row's cost.
    pub cost: Cost,
    /// Priority among rows of equal cost (lower first).
    pub priority: u16,
    /// Relative share among rows of equal cost and priority.
    pub weight: u16,
}

/// The longest prefix of a deck matching a number, and its rows.
#[derive(Clone, Copy, Debug)]
pub struct DeckMatch<'d> {
    deck: &'d RateDeck,
    prefix_len: usize,
    first: usize,
}

impl<'d> DeckMatch<'d> {
    /// Length of the matched prefix, in characters (a `+` included).
    pub fn prefix_len(&self) -> usize {
        self.prefix_len
    }

    /// The rows of the prefix, by cost, then priority, then weight (highest first).
    pub fn routes(&self) -> impl Iterator<Item = DeckRoute<'d>> + 'd {
        let deck = self.deck;
        let rows = &deck.rows[self.first..];
        let end = rows
            .iter()
            .position(|r| r.last)
            .map_or(rows.len(), |i| i + 1);
        rows[..end].iter().map(move |row| DeckRoute {
            trunk: &deck.trunks[usize::from(row.trunk)],
            cost: row.cost,
            priority: row.priority,
            weight: row.weight,
        })
    }

    /// The called number after the prefix's translation: `strip` leading characters removed,
    /// then `prepend` put in front. `None` when the prefix has no translation.
    pub fn translate(&self, number: &str) -> Option<String> {
        let row = &self.deck.rows[self.first];
        let prepend = &self.deck.prepends[row.prepend as usize];
        if row.strip == 0 && prepend.is_empty() {
            return None;
        }
        let rest = number.get(usize::from(row.strip)..).unwrap_or_default();
        Some(format!("{prepend}{rest}"))
    }
}

/// A row while the deck is being built.
struct Pending {
    table: u8,
    key: u64,
    line: u32,
    row: Row,
}

/// Splits a prefix into (digit count, leading `+`, digits as an integer).
fn parse_prefix(text: &str) -> Result<(usize, bool, u64), String> {
    let (plus, digits) = match text.strip_prefix('+') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "prefix {text:?} is not an optional '+' followed by digits"
        ));
    }
    if digits.len() > MAX_PREFIX_DIGITS {
        return Err(format!(
            "prefix {text:?} is longer than {MAX_PREFIX_DIGITS} digits"
        ));
    }
    let key = digits
        .bytes()
        .fold(0u64, |acc, b| acc * 10 + u64::from(b - b'0'));
    Ok((digits.len(), plus, key))
}

fn parse_u16(field: &str, name: &str, default: u16) -> Result<u16, String> {
    if field.is_empty() {
        return Ok(default);
    }
    field
        .parse()
        .map_err(|_| format!("{name} {field:?} is not a whole number 0-65535"))
}

/// Interns `name` in `names`, returning its index.
fn intern(names: &mut Vec<Box<str>>, index: &mut HashMap<Box<str>, u32>, name: &str) -> u32 {
    if let Some(&i) = index.get(name) {
        return i;
    }
    let i = names.len() as u32;
    names.push(name.into());
    index.insert(name.into(), i);
    i
}

fn is_trunk_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !name.starts_with(['-', '.'])
        && !name.ends_with(['-', '.'])
}

impl RateDeck {
    /// Parses a deck; the first malformed line refuses the whole deck.
    pub fn parse(text: &str) -> Result<Self, DeckError> {
        let mut pending = Vec::new();
        let mut trunks = Vec::new();
        let mut trunk_index = HashMap::new();
        let mut prepends: Vec<Box<str>> = vec!["".into()];
        let mut prepend_index = HashMap::from([(Box::<str>::from(""), 0u32)]);
        let mut header_allowed = true;
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let err = |message: String| DeckError { line, message };
            let content = raw.trim();
            if content.is_empty() || content.starts_with('#') {
                continue;
            }
            let mut fields = content.split(',').map(str::trim);
            let prefix = fields.next().unwrap_or_default();
            if std::mem::take(&mut header_allowed) && prefix.eq_ignore_ascii_case("prefix") {
                continue;
            }
            if pending.len() >= MAX_ROWS {
                return Err(err(format!("more than {MAX_ROWS} rows")));
            }
            let (digits, plus, key) = parse_prefix(prefix).map_err(err)?;
            let trunk = fields.next().unwrap_or_default();
            if !is_trunk_name(trunk) {
                return Err(err(format!(
                    "trunk {trunk:?} is not a Trunk name (lowercase letters, digits, '-', '.')"
                )));
            }
            let cost = Cost::parse(fields.next().unwrap_or_default()).map_err(err)?;
            let priority =
                parse_u16(fields.next().unwrap_or_default(), "priority", 1).map_err(err)?;
            let weight =
                parse_u16(fields.next().unwrap_or_default(), "weight", 100).map_err(err)?;
            let strip_field = fields.next().unwrap_or_default();
            let strip = if strip_field.is_empty() {
                0
            } else {
                strip_field
                    .parse::<u8>()
                    .ok()
                    .filter(|s| usize::from(*s) <= MAX_PREFIX_DIGITS + 1)
                    .ok_or_else(|| {
                        err(format!(
                            "strip {strip_field:?} is not a whole number 0-{}",
                            MAX_PREFIX_DIGITS + 1
                        ))
                    })?
            };
            let prepend = fields.next().unwrap_or_default();
            let prepend_ok = prepend.len() <= MAX_PREPEND
                && prepend
                    .bytes()
                    .enumerate()
                    .all(|(i, b)| b.is_ascii_digit() || (i == 0 && b == b'+'));
            if !prepend_ok {
                return Err(err(format!(
                    "prepend {prepend:?} is not an optional '+' and at most {MAX_PREPEND} digits"
                )));
            }
            if let Some(extra) = fields.next() {
                return Err(err(format!(
                    "unexpected 8th field {extra:?}: the columns are prefix,trunk,cost,priority,weight,strip,prepend"
                )));
            }
            let trunk_id = intern(&mut trunks, &mut trunk_index, trunk);
            if trunks.len() > MAX_TRUNKS {
                return Err(err(format!("more than {MAX_TRUNKS} distinct trunks")));
            }
            let prepend = intern(&mut prepends, &mut prepend_index, prepend);
            pending.push(Pending {
                table: table_index(digits, plus) as u8,
                key,
                line: line as u32,
                row: Row {
                    cost,
                    prepend,
                    trunk: trunk_id as u16,
                    priority,
                    weight,
                    strip,
                    last: false,
                },
            });
        }
        drop(trunk_index);
        drop(prepend_index);
        Self::build(pending, trunks, prepends)
    }

    fn build(
        mut pending: Vec<Pending>,
        trunks: Vec<Box<str>>,
        prepends: Vec<Box<str>>,
    ) -> Result<Self, DeckError> {
        // Group the rows of each prefix, one trunk once, then by cost, priority and weight.
        pending.sort_unstable_by_key(|p| (p.table, p.key, p.row.trunk, p.line));
        for pair in pending.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            if (a.table, a.key) != (b.table, b.key) {
                continue;
            }
            if a.row.trunk == b.row.trunk {
                return Err(DeckError {
                    line: b.line as usize,
                    message: format!(
                        "prefix repeats trunk {} (already on line {})",
                        trunks[usize::from(a.row.trunk)],
                        a.line
                    ),
                });
            }
        }
        pending.sort_unstable_by_key(|p| {
            (
                p.table,
                p.key,
                p.row.cost,
                p.row.priority,
                std::cmp::Reverse(p.row.weight),
                p.line,
            )
        });
        let mut counts = [0usize; TABLES];
        for (i, p) in pending.iter().enumerate() {
            let first = i == 0 || (pending[i - 1].table, pending[i - 1].key) != (p.table, p.key);
            if first {
                counts[usize::from(p.table)] += 1;
            } else {
                let head = &pending[i - 1];
                if (head.row.strip, head.row.prepend) != (p.row.strip, p.row.prepend) {
                    return Err(DeckError {
                        line: p.line as usize,
                        message: format!(
                            "strip and prepend differ from line {} of the same prefix (a translation belongs to the prefix)",
                            head.line
                        ),
                    });
                }
            }
        }
        let mut tables: Vec<Table> = counts
            .iter()
            .map(|&n| Table::with_capacity_and_hasher(n, Default::default()))
            .collect();
        let total: usize = counts.iter().sum();
        let mut filter = vec![0u64; (total * 16).next_power_of_two().div_ceil(64)];
        let mut rows = Vec::with_capacity(pending.len());
        let mut prefixes = 0;
        for (i, p) in pending.iter().enumerate() {
            let first = i == 0 || (pending[i - 1].table, pending[i - 1].key) != (p.table, p.key);
            if first {
                tables[usize::from(p.table)].insert(p.key, rows.len() as u32);
                let bit = filter_bit(&filter, usize::from(p.table), p.key);
                filter[bit / 64] |= 1 << (bit % 64);
                prefixes += 1;
            }
            let last = pending
                .get(i + 1)
                .is_none_or(|n| (n.table, n.key) != (p.table, p.key));
            rows.push(Row { last, ..p.row });
        }
        Ok(Self {
            tables,
            filter,
            rows,
            trunks,
            prepends,
            prefixes,
        })
    }

    /// Distinct prefixes.
    pub fn prefixes(&self) -> usize {
        self.prefixes
    }

    /// Rows (prefix and trunk pairs).
    pub fn rows(&self) -> usize {
        self.rows.len()
    }

    /// Distinct trunks named.
    pub fn trunks(&self) -> impl Iterator<Item = &str> {
        self.trunks.iter().map(|t| &**t)
    }

    /// Heap bytes the deck holds (rows, hash tables at their allocated size, interned names).
    pub fn heap_bytes(&self) -> usize {
        let slot = std::mem::size_of::<(u64, u32)>() + 1;
        let tables: usize = self
            .tables
            .iter()
            .filter(|t| t.capacity() > 0)
            .map(|t| {
                // hashbrown keeps at most 7/8 of its buckets full, buckets a power of two.
                let buckets = (t.capacity() * 8 / 7).next_power_of_two();
                buckets * slot
            })
            .sum();
        let names: usize = self
            .trunks
            .iter()
            .chain(&self.prepends)
            .map(|n| n.len() + std::mem::size_of::<Box<str>>())
            .sum();
        self.rows.capacity() * std::mem::size_of::<Row>()
            + self.filter.capacity() * 8
            + self.tables.capacity() * std::mem::size_of::<Table>()
            + tables
            + names
    }

    /// The longest prefix of `number` in the deck. The number is an optional `+` then digits;
    /// matching stops at its first other character.
    pub fn lookup(&self, number: &str) -> Option<DeckMatch<'_>> {
        let (plus, digits) = match number.strip_prefix('+') {
            Some(rest) => (true, rest.as_bytes()),
            None => (false, number.as_bytes()),
        };
        let mut keys = [0u64; MAX_PREFIX_DIGITS + 1];
        let mut len = 0;
        let mut key = 0u64;
        for &b in digits.iter().take(MAX_PREFIX_DIGITS) {
            if !b.is_ascii_digit() {
                break;
            }
            key = key * 10 + u64::from(b - b'0');
            len += 1;
            keys[len] = key;
        }
        (1..=len).rev().find_map(|n| {
            let index = table_index(n, plus);
            let table = &self.tables[index];
            if table.is_empty() {
                return None;
            }
            let bit = filter_bit(&self.filter, index, keys[n]);
            if self.filter[bit / 64] & (1 << (bit % 64)) == 0 {
                return None;
            }
            table.get(&keys[n]).map(|&first| DeckMatch {
                deck: self,
                prefix_len: n + usize::from(plus),
                first: first as usize,
            })
        })
    }
}

impl Default for RateDeck {
    /// An empty deck: no prefix matches.
    fn default() -> Self {
        Self {
            tables: (0..TABLES).map(|_| Table::default()).collect(),
            filter: vec![0],
            rows: Vec::new(),
            trunks: Vec::new(),
            prepends: vec!["".into()],
            prefixes: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trunks(deck: &RateDeck, number: &str) -> Vec<(String, String)> {
        deck.lookup(number)
            .map(|m| {
                m.routes()
                    .map(|r| (r.trunk.to_owned(), r.cost.to_string()))
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn costs_parse_to_micro_units() {
        assert_eq!(Cost::parse("0.0123"), Ok(Cost(12_300)));
        assert_eq!(Cost::parse("1"), Ok(Cost(1_000_000)));
        assert_eq!(Cost::parse(".5"), Ok(Cost(500_000)));
        assert_eq!(Cost::parse("4294.967295"), Ok(Cost(u32::MAX)));
        assert!(Cost::parse("4294.967296").is_err());
        assert!(Cost::parse("99999999999").is_err());
        assert!(Cost::parse("-1").is_err());
        assert!(Cost::parse("0.1234567").is_err());
        assert!(Cost::parse("").is_err());
        assert!(Cost::parse(".").is_err());
        assert!(Cost::parse("1e3").is_err());
        assert_eq!(Cost(12_300).to_string(), "0.0123");
        assert_eq!(Cost(2_000_000).to_string(), "2");
    }

    #[test]
    fn longest_prefix_wins() {
        let deck = RateDeck::parse(
            "prefix,trunk,cost
+4,world,0.5
+49,de,0.1
+4930,berlin,0.05
0049,zero,0.2
49,national,0.3
",
        )
        .unwrap();
        assert_eq!(deck.prefixes(), 5);
        assert_eq!(trunks(&deck, "+4930123")[0].0, "berlin");
        assert_eq!(trunks(&deck, "+4989123")[0].0, "de");
        assert_eq!(trunks(&deck, "+44123")[0].0, "world");
        assert_eq!(
            trunks(&deck, "+49")[0].0,
            "de",
            "a number equal to a prefix"
        );
        assert_eq!(trunks(&deck, "+4")[0].0, "world");
        assert_eq!(deck.lookup("+4930").unwrap().prefix_len(), 5);
        // '+' and leading zeros are part of the prefix.
        assert_eq!(trunks(&deck, "4930123")[0].0, "national");
        assert_eq!(trunks(&deck, "004930")[0].0, "zero");
        assert!(deck.lookup("+1555").is_none());
        assert!(deck.lookup("1555").is_none());
        assert!(deck.lookup("").is_none());
        assert!(deck.lookup("alice").is_none());
        // Matching stops at the first non-digit.
        assert_eq!(trunks(&deck, "+49;x")[0].0, "de");
    }

    #[test]
    fn rows_of_a_prefix_by_cost_then_priority_then_weight() {
        let deck = RateDeck::parse(
            "# carriers for Germany
+49,expensive,0.9
+49,cheap-low-weight,0.1,1,10
+49,cheap-backup,0.1,2,500
+49,cheap-high-weight,0.1,1,90
+49,cheapest,0.01,9
",
        )
        .unwrap();
        let order: Vec<_> = trunks(&deck, "+4930")
            .into_iter()
            .map(|(trunk, _)| trunk)
            .collect();
        assert_eq!(
            order,
            [
                "cheapest",
                "cheap-high-weight",
                "cheap-low-weight",
                "cheap-backup",
                "expensive"
            ]
        );
        let routes: Vec<_> = deck.lookup("+49").unwrap().routes().collect();
        assert_eq!(routes[1].weight, 90);
        assert_eq!(routes[3].priority, 2);
        assert_eq!(routes[4].cost, Cost(900_000));
    }

    #[test]
    fn ties_keep_the_deck_order() {
        let deck = RateDeck::parse("+1,b,0.1\n+1,a,0.1\n+1,c,0.1\n").unwrap();
        let order: Vec<_> = trunks(&deck, "+1555").into_iter().map(|t| t.0).collect();
        assert_eq!(order, ["b", "a", "c"]);
        // Equal cost, priority and weight: the caller spreads them by weight.
        let routes: Vec<_> = deck.lookup("+1").unwrap().routes().collect();
        assert!(routes.iter().all(|r| r.weight == 100 && r.priority == 1));
    }

    #[test]
    fn translations_belong_to_the_prefix() {
        let deck = RateDeck::parse("+44,uk,0.1,1,100,3,0\n+1,us,0.2\n").unwrap();
        assert_eq!(
            deck.lookup("+442079")
                .unwrap()
                .translate("+442079")
                .as_deref(),
            Some("02079")
        );
        assert_eq!(deck.lookup("+1555").unwrap().translate("+1555"), None);
        let err = RateDeck::parse("+44,uk,0.1,1,100,3,0\n+44,uk2,0.1\n").unwrap_err();
        assert_eq!(err.line, 2, "{err}");
    }

    #[test]
    fn malformed_lines_are_refused_with_their_line_number() {
        let cases = [
            ("+49,de,0.1\n49x,de,0.1\n", 2, "prefix \"49x\""),
            ("# c\n\n+49,DE,0.1\n", 3, "trunk \"DE\""),
            ("+49,de\n", 1, "cost \"\""),
            ("prefix,trunk,cost\n+1,a,1\n+2,b,-3\n", 3, "cost \"-3\""),
            ("+1,a,1,x\n", 1, "priority \"x\""),
            ("+1,a,1,1,70000\n", 1, "weight \"70000\""),
            ("+1,a,1,1,1,300\n", 1, "strip \"300\""),
            ("+1,a,1,1,1,0,1a\n", 1, "prepend \"1a\""),
            ("+1,a,1,1,1,0,1,zz\n", 1, "8th field"),
            ("+1,a,1\n+2,b,1\n+1,a,2\n", 3, "already on line 1"),
            ("+1234567890123456789,a,1\n", 1, "longer than 18"),
            ("+,a,1\n", 1, "prefix \"+\""),
            ("+1,a,1\nprefix,trunk,cost\n", 2, "prefix \"prefix\""),
        ];
        for (text, line, needle) in cases {
            let err = RateDeck::parse(text).unwrap_err();
            assert_eq!(err.line, line, "{text:?}: {err}");
            assert!(err.to_string().contains(needle), "{text:?}: {err}");
            assert!(err.to_string().starts_with(&format!("line {line}: ")));
        }
    }

    #[test]
    fn empty_and_comment_only_decks_match_nothing() {
        for text in ["", "# nothing yet\n\n", "prefix,trunk,cost\n"] {
            let deck = RateDeck::parse(text).unwrap();
            assert_eq!(deck.prefixes(), 0);
            assert!(deck.lookup("+49").is_none());
        }
        assert!(RateDeck::default().lookup("1").is_none());
    }

    #[test]
    fn trunk_names_are_interned() {
        let text: String = (0..1000)
            .map(|i| format!("+{i},carrier-{},0.{i}\n", i % 3))
            .collect();
        let deck = RateDeck::parse(&text).unwrap();
        assert_eq!(deck.trunks().count(), 3);
        assert_eq!(deck.rows(), 1000);
        assert_eq!(trunks(&deck, "+999")[0].0, "carrier-0");
        assert!(deck.heap_bytes() > 1000 * std::mem::size_of::<Row>());
        assert_eq!(std::mem::size_of::<Row>(), 16);
    }
}
