//! How the store makes a write to several trees whole. A small write is first recorded whole, as
//! one value under one key, then made key by key, then the record is removed: sled recovers
//! writes made one after another as a prefix of their order, so after a crash either no key of
//! the write changed, or the record is there and [`replay`] completes the write when the store
//! opens. A single sled insert costs far less than a sled transaction (which seals and syncs its
//! log buffer twice and wakes sled's whole I/O pool), and the writer lock already keeps writers
//! apart. A large write goes in one transaction instead ([`write_in_transaction`]), whose cost
//! is then shared by many items. This keeps sled's own state whole; what makes a write durable
//! is the store's write-ahead log (`wal`), whose frames carry the same encoded changes.

use super::StoreError;

/// One change to one tree: a value to set, or `None` to remove the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Op {
    pub tree: usize,
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

impl Op {
    pub fn set(tree: usize, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Op {
        Op {
            tree,
            key: key.into(),
            value: Some(value.into()),
        }
    }

    pub fn remove(tree: usize, key: impl Into<Vec<u8>>) -> Op {
        Op {
            tree,
            key: key.into(),
            value: None,
        }
    }
}

/// The key of the one record (writers hold the store's writer lock, so there is at most one).
pub(super) const KEY: &[u8] = b"write";

/// Each op as: tree (1 byte), 0 for a removal or 1 for a value, key length (4 bytes, big
/// endian), key, then for a value its length and bytes.
pub(super) fn encode(ops: &[Op]) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded_len(ops));
    encode_into(&mut out, ops);
    out
}

/// How many bytes [`encode`] makes of `ops`.
pub(super) fn encoded_len(ops: &[Op]) -> usize {
    ops.iter()
        .map(|o| 10 + o.key.len() + o.value.as_ref().map_or(0, Vec::len))
        .sum()
}

/// [`encode`], appending to `out`.
pub(super) fn encode_into(out: &mut Vec<u8>, ops: &[Op]) {
    for op in ops {
        out.push(op.tree as u8);
        out.push(u8::from(op.value.is_some()));
        put(out, &op.key);
        if let Some(v) = &op.value {
            put(out, v);
        }
    }
}

fn put(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// The ops of a record; `trees` is how many trees there are.
pub(super) fn decode(mut bytes: &[u8], trees: usize) -> Result<Vec<Op>, StoreError> {
    let bad = |what: &str| StoreError::Corrupt(format!("interrupted-write record: {what}"));
    let mut ops = Vec::new();
    while let [tree, kind, rest @ ..] = bytes {
        let tree = usize::from(*tree);
        if tree >= trees {
            return Err(bad("unknown tree"));
        }
        let (key, rest) = take(rest).ok_or_else(|| bad("truncated key"))?;
        let (value, rest) = match kind {
            0 => (None, rest),
            1 => {
                let (v, rest) = take(rest).ok_or_else(|| bad("truncated value"))?;
                (Some(v.to_vec()), rest)
            }
            _ => return Err(bad("unknown operation")),
        };
        ops.push(Op {
            tree,
            key: key.to_vec(),
            value,
        });
        bytes = rest;
    }
    if !bytes.is_empty() {
        return Err(bad("trailing byte"));
    }
    Ok(ops)
}

fn take(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = bytes.split_first_chunk::<4>()?;
    let len = u32::from_be_bytes(*len) as usize;
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// Makes `ops` in order.
pub(super) fn apply(trees: &[sled::Tree], ops: Vec<Op>) -> Result<(), StoreError> {
    for op in ops {
        let tree = &trees[op.tree];
        match op.value {
            Some(v) => tree.insert(op.key, v)?,
            None => tree.remove(op.key)?,
        };
    }
    Ok(())
}

/// Records `ops`, makes them, and removes the record.
pub(super) fn write(trees: &[sled::Tree], journal: usize, ops: Vec<Op>) -> Result<(), StoreError> {
    trees[journal].insert(KEY, encode(&ops))?;
    apply(trees, ops)?;
    trees[journal].remove(KEY)?;
    Ok(())
}

/// Makes `ops` in one sled transaction.
pub(super) fn write_in_transaction(trees: &[sled::Tree], ops: &[Op]) -> Result<(), StoreError> {
    use sled::Transactional;
    trees
        .transaction(|t| {
            for op in ops {
                match &op.value {
                    Some(v) => t[op.tree].insert(op.key.as_slice(), v.as_slice())?,
                    None => t[op.tree].remove(op.key.as_slice())?,
                };
            }
            Ok::<_, sled::transaction::ConflictableTransactionError<StoreError>>(())
        })
        .map_err(|e| match e {
            sled::transaction::TransactionError::Abort(e) => e,
            sled::transaction::TransactionError::Storage(e) => StoreError::Sled(e),
        })
}

/// Completes a write the server stopped in the middle of, if any; answers how many changes it
/// made again.
pub(super) fn replay(trees: &[sled::Tree], journal: usize) -> Result<usize, StoreError> {
    let Some(record) = trees[journal].get(KEY)? else {
        return Ok(0);
    };
    let ops = decode(&record, trees.len())?;
    let n = ops.len();
    apply(trees, ops)?;
    trees[journal].remove(KEY)?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_decode_to_the_ops_they_were_made_of() {
        let ops = vec![
            Op::set(0, b"a".to_vec(), vec![7u8; 5000]),
            Op::remove(3, 9u64.to_be_bytes()),
            Op::set(2, Vec::new(), Vec::new()),
        ];
        assert_eq!(decode(&encode(&ops), 4).unwrap(), ops);
        assert_eq!(decode(&[], 4).unwrap(), Vec::new());
    }

    #[test]
    fn a_damaged_record_is_refused_not_applied() {
        let whole = encode(&[Op::set(1, b"key".to_vec(), b"value".to_vec())]);
        for cut in 1..whole.len() {
            assert!(decode(&whole[..cut], 4).is_err(), "cut at {cut}");
        }
        assert!(decode(&whole, 1).is_err(), "tree out of range");
        let mut kind = whole.clone();
        kind[1] = 2;
        assert!(decode(&kind, 4).is_err(), "unknown operation");
    }
}
