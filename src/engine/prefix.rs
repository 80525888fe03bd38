//! Prefix reuse: which idle sequence slot a new request should take, and how many of its
//! cached prompt tokens it may keep instead of recomputing them.
//!
//! SECURITY: by default a slot's cache is reused only by the API key that filled it
//! (`model.prefix_cache = "per-key"`). Shared reuse would let one key learn, from
//! `usage.prompt_tokens_details.cached_tokens` or from time to first token, whether
//! another key recently sent a prompt starting with given text. `"shared"` allows it for
//! single-tenant deployments; `"off"` never reuses.
//!
//! Pure code (generic over the token type), unit-tested without llama.cpp.

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum PrefixCache {
    /// Reuse a slot's cached prefix only for the key that filled it.
    #[default]
    PerKey,
    /// Reuse across keys (one tenant only: leaks prompt prefixes between keys).
    Shared,
    /// Never reuse; every prompt is computed from scratch.
    Off,
}

/// What the chooser needs to know of one slot.
#[derive(Debug)]
pub struct SlotView<'a, T> {
    /// No request is running in it.
    pub idle: bool,
    /// The key whose request filled its cache, if any.
    pub owner: Option<&'a str>,
    /// Tokens whose K/V the slot holds, from position 0.
    pub cached: &'a [T],
    /// When it last finished (larger is more recent).
    pub last_used: u64,
}

/// The slot chosen and how many leading prompt tokens it keeps.
#[derive(Debug, PartialEq, Eq)]
pub struct Choice {
    pub slot: usize,
    pub reuse: usize,
}

/// Length of the common prefix of two token sequences.
pub fn common_prefix<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Choose an idle slot for `prompt` from `key`: the one whose cache shares the longest
/// prefix with it (when the policy allows reuse), else the least recently used one, so
/// caches worth keeping survive longest. `None` when no slot is idle.
///
/// At least the last prompt token is always recomputed: its logits start the completion.
pub fn choose<T: PartialEq>(
    slots: &[SlotView<'_, T>],
    key: &str,
    prompt: &[T],
    policy: PrefixCache,
) -> Option<Choice> {
    let max_reuse = prompt.len().saturating_sub(1);
    let reusable = |s: &SlotView<'_, T>| match policy {
        PrefixCache::Off => false,
        PrefixCache::Shared => true,
        PrefixCache::PerKey => s.owner == Some(key),
    };
    let best_hit = slots
        .iter()
        .enumerate()
        .filter(|(_, s)| s.idle && reusable(s))
        .map(|(i, s)| (i, common_prefix(s.cached, prompt).min(max_reuse)))
        .filter(|&(_, n)| n > 0)
        .max_by_key(|&(i, n)| (n, std::cmp::Reverse(i)));
    if let Some((slot, reuse)) = best_hit {
        return Some(Choice { slot, reuse });
    }
    slots
        .iter()
        .enumerate()
        .filter(|(_, s)| s.idle)
        .min_by_key(|(_, s)| s.last_used)
        .map(|(slot, _)| Choice { slot, reuse: 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view<'a>(
        idle: bool,
        owner: Option<&'a str>,
        cached: &'a [u32],
        last_used: u64,
    ) -> SlotView<'a, u32> {
        SlotView {
            idle,
            owner,
            cached,
            last_used,
        }
    }

    #[test]
    fn longest_prefix_of_the_same_key_wins() {
        let slots = [
            view(true, Some("a"), &[1, 2, 9], 5),
            view(true, Some("a"), &[1, 2, 3, 4, 7], 1),
            view(true, Some("b"), &[1, 2, 3, 4, 5], 9),
        ];
        let c = choose(&slots, "a", &[1, 2, 3, 4, 5, 6], PrefixCache::PerKey).unwrap();
        assert_eq!(c, Choice { slot: 1, reuse: 4 });
    }

    #[test]
    fn another_keys_cache_is_never_reused_per_key_but_is_when_shared() {
        let slots = [
            view(true, Some("b"), &[1, 2, 3, 4, 5], 9),
            view(true, None, &[], 3),
        ];
        let c = choose(&slots, "a", &[1, 2, 3, 4, 5, 6], PrefixCache::PerKey).unwrap();
        assert_eq!(
            c,
            Choice { slot: 1, reuse: 0 },
            "least recently used, nothing reused"
        );
        let c = choose(&slots, "a", &[1, 2, 3, 4, 5, 6], PrefixCache::Shared).unwrap();
        assert_eq!(c, Choice { slot: 0, reuse: 5 });
        let c = choose(&slots, "b", &[1, 2, 3, 4, 5, 6], PrefixCache::Off).unwrap();
        assert_eq!(c.reuse, 0);
    }

    #[test]
    fn the_last_prompt_token_is_always_recomputed() {
        let slots = [view(true, Some("a"), &[1, 2, 3], 0)];
        let c = choose(&slots, "a", &[1, 2, 3], PrefixCache::PerKey).unwrap();
        assert_eq!(c, Choice { slot: 0, reuse: 2 });
        let c = choose(&slots, "a", &[1], PrefixCache::PerKey).unwrap();
        assert_eq!(c, Choice { slot: 0, reuse: 0 });
    }

    #[test]
    fn busy_slots_are_not_chosen() {
        let slots = [
            view(false, Some("a"), &[1, 2, 3], 0),
            view(true, None, &[], 7),
        ];
        assert_eq!(
            choose(&slots, "a", &[1, 2, 3, 4], PrefixCache::PerKey),
            Some(Choice { slot: 1, reuse: 0 })
        );
        let busy = [view(false, None, &[], 0)];
        assert_eq!(choose(&busy, "a", &[1u32], PrefixCache::PerKey), None);
    }

    #[test]
    fn without_a_hit_the_least_recently_used_slot_is_evicted() {
        let slots = [
            view(true, Some("a"), &[9], 8),
            view(true, Some("a"), &[8], 2),
            view(true, Some("a"), &[7], 5),
        ];
        assert_eq!(
            choose(&slots, "a", &[1, 2], PrefixCache::PerKey),
            Some(Choice { slot: 1, reuse: 0 })
        );
    }
}
