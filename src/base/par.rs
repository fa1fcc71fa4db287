//! Order-preserving parallel map for read-only scans of many independent entries: `status`
//! and the planner read every registered module, and at a thousand modules the scan is bound
//! by syscall latency, which more threads hide.

use std::num::NonZeroUsize;

/// `items.iter().enumerate().map(f)` on up to as many threads as there are cores, with at
/// least `per_thread` items each (small inputs stay on the calling thread: a thread costs
/// about as much as reading a few modules). Results keep the order of `items`.
pub fn map<T: Sync, R: Send>(
    items: &[T],
    per_thread: usize,
    f: impl Fn(usize, &T) -> R + Sync,
) -> Vec<R> {
    let wanted = items.len() / per_thread.max(1);
    let threads = if wanted < 2 {
        1
    } else {
        std::thread::available_parallelism()
            .map_or(1, NonZeroUsize::get)
            .min(wanted)
            .min(8)
    };
    if threads < 2 {
        return items.iter().enumerate().map(|(i, t)| f(i, t)).collect();
    }
    let chunk = items.len().div_ceil(threads);
    let f = &f;
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .enumerate()
            .map(|(c, part)| {
                scope.spawn(move || {
                    part.iter()
                        .enumerate()
                        .map(|(i, t)| f(c * chunk + i, t))
                        .collect::<Vec<R>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_and_indices_on_any_size() {
        for n in [0, 1, 5, 64, 1001] {
            let items: Vec<usize> = (0..n).map(|i| i * 3).collect();
            let got = map(&items, 4, |i, x| (i, *x));
            let want: Vec<_> = items.iter().copied().enumerate().collect();
            assert_eq!(got, want, "n = {n}");
        }
    }
}
