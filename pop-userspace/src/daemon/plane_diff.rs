//! What [`super::addr4`] and [`super::addr6`] write, in the order they write
//! it: the entries of a customer or local plane that differ between what the
//! maps hold (`applied`) and what they should (`want`).
use std::collections::HashMap;
use std::hash::Hash;

/// The entries of `want` that `applied` lacks or holds with another value,
/// sorted by `order`.
pub fn changed<'a, K, V, O>(
    applied: &HashMap<K, V>,
    want: &'a HashMap<K, V>,
    order: impl Fn(&K) -> O,
) -> Vec<(&'a K, &'a V)>
where
    K: Eq + Hash,
    V: PartialEq,
    O: Ord,
{
    let mut out: Vec<(&K, &V)> = want
        .iter()
        .filter(|(k, v)| applied.get(k) != Some(v))
        .collect();
    out.sort_unstable_by_key(|(k, _)| order(k));
    out
}

/// The keys of `applied` that `want` lacks, sorted by `order`.
pub fn gone<K, V, W, O>(
    applied: &HashMap<K, V>,
    want: &HashMap<K, W>,
    order: impl Fn(&K) -> O,
) -> Vec<K>
where
    K: Copy + Eq + Hash,
    O: Ord,
{
    let mut out: Vec<K> = applied
        .keys()
        .filter(|k| !want.contains_key(k))
        .copied()
        .collect();
    out.sort_unstable_by_key(&order);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_and_gone_entries_come_out_in_the_given_order() {
        let applied: HashMap<u32, u32> = [(1, 10), (2, 20), (3, 30)].into_iter().collect();
        let want: HashMap<u32, u32> = [(2, 21), (3, 30), (5, 50), (4, 40)].into_iter().collect();
        let c = changed(&applied, &want, |k| std::cmp::Reverse(*k));
        assert_eq!(c, vec![(&5, &50), (&4, &40), (&2, &21)]);
        assert_eq!(gone(&applied, &want, |k| *k), vec![1]);
        assert!(changed(&want, &want, |k| *k).is_empty());
    }
}
