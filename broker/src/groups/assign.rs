//! Sticky partition assignment for clustering groups.
//!
//! Balanced (member loads differ by at most one) and sticky: a member keeps
//! as many of its partitions as its new share allows, so a join or leave
//! moves only the partitions it has to. Members that had more keep the
//! larger shares. Deterministic, so the same inputs give the same answer.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

use super::window::MemberSlot;

/// Assigns every partition to one of `members` (none when there are no
/// members), starting from `previous`.
pub fn assign<P: Ord + Clone + Hash>(
    partitions: &[P],
    members: &[MemberSlot],
    previous: &HashMap<P, MemberSlot>,
) -> HashMap<P, MemberSlot> {
    let mut out = HashMap::with_capacity(partitions.len());
    if members.is_empty() {
        return out;
    }
    let mut sorted: Vec<P> = partitions.to_vec();
    sorted.sort();
    sorted.dedup();
    let mut kept: BTreeMap<MemberSlot, Vec<P>> = members.iter().map(|&m| (m, Vec::new())).collect();
    let mut free = Vec::new();
    for p in &sorted {
        match previous.get(p).and_then(|m| kept.get_mut(m)) {
            Some(list) => list.push(p.clone()),
            None => free.push(p.clone()),
        }
    }
    // Shares: the members that kept the most get the one-larger shares.
    let base = sorted.len() / members.len();
    let extra = sorted.len() % members.len();
    let mut order: Vec<MemberSlot> = kept.keys().copied().collect();
    order.sort_by_key(|m| (std::cmp::Reverse(kept[m].len()), *m));
    let share: HashMap<MemberSlot, usize> = order
        .iter()
        .enumerate()
        .map(|(i, &m)| (m, base + usize::from(i < extra)))
        .collect();
    for (m, list) in kept.iter_mut() {
        while list.len() > share[m] {
            free.push(list.pop().expect("longer than its share"));
        }
    }
    free.sort();
    let mut free = free.into_iter();
    for m in &order {
        let list = kept.get_mut(m).expect("member");
        while list.len() < share[m] {
            match free.next() {
                Some(p) => list.push(p),
                None => break,
            }
        }
    }
    for (m, list) in kept {
        for p in list {
            out.insert(p, m);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn loads(a: &HashMap<u32, MemberSlot>, members: &[MemberSlot]) -> Vec<usize> {
        members
            .iter()
            .map(|m| a.values().filter(|v| *v == m).count())
            .collect()
    }

    #[test]
    fn spreads_evenly() {
        let parts: Vec<u32> = (0..8).collect();
        let a = assign(&parts, &[1, 2, 3], &HashMap::new());
        assert_eq!(a.len(), 8);
        let mut l = loads(&a, &[1, 2, 3]);
        l.sort();
        assert_eq!(l, vec![2, 3, 3]);
    }

    #[test]
    fn a_join_moves_only_what_it_must() {
        let parts: Vec<u32> = (0..8).collect();
        let before = assign(&parts, &[1, 2], &HashMap::new());
        let after = assign(&parts, &[1, 2, 3], &before);
        let moved = parts.iter().filter(|p| before[p] != after[p]).count();
        assert_eq!(moved, 2, "the new member takes 2 (8/3 rounded down)");
        assert!(
            parts
                .iter()
                .filter(|p| after[p] != 3)
                .all(|p| before[p] == after[p])
        );
    }

    #[test]
    fn a_leave_hands_over_only_the_leavers_partitions() {
        let parts: Vec<u32> = (0..6).collect();
        let before = assign(&parts, &[1, 2, 3], &HashMap::new());
        let after = assign(&parts, &[1, 3], &before);
        for p in &parts {
            if before[p] != 2 {
                assert_eq!(before[p], after[p]);
            }
        }
        assert_eq!(loads(&after, &[1, 3]), vec![3, 3]);
    }

    #[test]
    fn no_members_no_assignment() {
        assert!(assign(&[0u32, 1], &[], &HashMap::new()).is_empty());
    }

    proptest! {
        #[test]
        fn balanced_complete_and_sticky(
            n in 0u32..40,
            before in proptest::collection::btree_set(0u32..8, 1..6),
            after in proptest::collection::btree_set(0u32..8, 1..6),
        ) {
            let parts: Vec<u32> = (0..n).collect();
            let before: Vec<_> = before.into_iter().collect();
            let after: Vec<_> = after.into_iter().collect();
            let prev = assign(&parts, &before, &HashMap::new());
            let next = assign(&parts, &after, &prev);
            prop_assert_eq!(next.len(), parts.len());
            let l = loads(&next, &after);
            prop_assert!(l.iter().max().unwrap() - l.iter().min().unwrap() <= 1);
            // Stickiness: a surviving member keeps min(what it had, its share).
            for m in after.iter().filter(|m| before.contains(m)) {
                let had = prev.values().filter(|v| *v == m).count();
                let kept = parts.iter().filter(|p| prev[p] == *m && next[p] == *m).count();
                let share = next.values().filter(|v| *v == m).count();
                prop_assert_eq!(kept, had.min(share));
            }
        }
    }
}
