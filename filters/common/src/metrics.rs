//! Metric naming. Names are `meshguard_<filter>_<what>` followed by dotted
//! label values, e.g. `meshguard_ab_assigned.checkout.treatment`. Envoy puts
//! wasm metrics under the `wasmcustom.` stats namespace, which its Prometheus
//! endpoint strips again; the README shows a `stats_tags` rule that turns the
//! dotted segments into labels.

/// Makes a config-provided name safe as a stat-name segment: dots would
/// create extra hierarchy levels, so anything outside `[A-Za-z0-9_-]`
/// becomes `_`.
pub fn segment(value: &str) -> String {
    value
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// `base` followed by each label value as a dotted segment.
pub fn name(base: &str, labels: &[&str]) -> String {
    let mut out = String::from(base);
    for label in labels {
        out.push('.');
        out.push_str(&segment(label));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            name("meshguard_ab_assigned", &["exp.1", "b v"]),
            "meshguard_ab_assigned.exp_1.b_v"
        );
        assert_eq!(name("meshguard_ab_x", &[]), "meshguard_ab_x");
    }
}
