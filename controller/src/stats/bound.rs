//! A one-sided upper confidence bound on a rate from a binomial count, by the Chernoff bound:
//! the largest `p` with `n * KL(x/n || p) <= ln(1/delta)`. Valid for every `n` (no normal
//! approximation), so it holds for a handful of errors in a small window too.

/// Kullback-Leibler divergence of Bernoulli(`q`) from Bernoulli(`p`).
pub fn kl(q: f64, p: f64) -> f64 {
    let term = |a: f64, b: f64| if a <= 0.0 { 0.0 } else { a * (a / b).ln() };
    term(q, p) + term(1.0 - q, 1.0 - p)
}

/// An upper bound on the rate of which `events` of `trials` were seen, holding with
/// probability at least `1 - delta`; `None` without trials.
pub fn upper(events: u64, trials: u64, delta: f64) -> Option<f64> {
    if trials == 0 {
        return None;
    }
    let observed = (events as f64 / trials as f64).min(1.0);
    let budget = (1.0 / delta).ln() / trials as f64;
    let (mut low, mut high) = (observed, 1.0);
    // Bisection: kl(observed, p) grows as p moves up from observed.
    for _ in 0..100 {
        let mid = (low + high) / 2.0;
        if kl(observed, mid) > budget {
            high = mid;
        } else {
            low = mid;
        }
    }
    Some(high.min(1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_is_above_the_observed_rate_and_tightens_with_data() {
        let small = upper(1, 100, 0.01).expect("trials");
        let large = upper(100, 10_000, 0.01).expect("trials");
        assert!(small > 0.01 && large > 0.01);
        assert!(large < small, "{large} {small}");
        assert!(large < 0.0135, "{large}");
        let none = upper(0, 1000, 0.01).expect("trials");
        assert!(none > 0.0 && none < 0.006, "no events still bounds the rate: {none}");
        assert_eq!(upper(0, 0, 0.01), None);
    }

    #[test]
    fn the_bound_covers_the_true_rate_as_often_as_it_says() {
        use rand::SeedableRng;
        use rand_distr::{Binomial, Distribution};
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        let (p, n, delta) = (0.01, 2000, 0.05);
        let misses = (0..4000)
            .filter(|_| {
                let x = Binomial::new(n, p).expect("valid").sample(&mut rng);
                upper(x, n, delta).expect("trials") < p
            })
            .count();
        assert!(misses as f64 / 4000.0 <= delta, "{misses} misses");
    }
}
