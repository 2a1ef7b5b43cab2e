//! Guest instructions per request (wasmtime fuel) against the checked-in
//! budget in `bench/fuel-budget.json`: fails when a path costs more than
//! 10% over its budget, when a measured path has no budget, and when the
//! budget names a path that is no longer measured (so the file cannot rot).
//! Fuel is deterministic: this test is exact on any machine, unlike timing.

use std::collections::{BTreeMap, BTreeSet};

use meshguard_e2e::fuel::{self, Verdict};

#[test]
fn fuel_per_request_stays_within_budget() {
    let file = fuel::budget_file();
    let budget = fuel::read_budget(&file).unwrap_or_else(|e| panic!("{e}"));
    let paths = fuel::paths();

    let mut seen = BTreeSet::new();
    for p in &paths {
        assert!(
            seen.insert(p.name),
            "path {} is listed twice in fuel::paths()",
            p.name
        );
    }

    let mut measured = BTreeMap::new();
    let mut errors = Vec::new();
    for (p, r) in paths.iter().zip(fuel::measure_all(&paths)) {
        match r {
            Ok(n) => {
                measured.insert(p.name.to_string(), n);
            }
            Err(e) => errors.push(format!("{}: {e}", p.name)),
        }
    }
    assert!(errors.is_empty(), "cannot measure:\n{}", errors.join("\n"));

    let names: BTreeSet<&String> = measured.keys().chain(budget.keys()).collect();
    let mut report = Vec::new();
    let mut failures = Vec::new();
    for name in names {
        let (m, b) = (measured.get(name).copied(), budget.get(name).copied());
        let line = match (m, b) {
            (Some(m), Some(b)) => format!(
                "{name}: {m} instructions/request, budget {b} ({:+.1}%)",
                fuel::change_percent(m, b)
            ),
            (Some(m), None) => format!("{name}: {m} instructions/request, no budget"),
            (None, _) => format!("{name}: in the budget file but not measured"),
        };
        match fuel::verdict(m, b) {
            Verdict::Ok => report.push(line),
            Verdict::Under => report.push(format!(
                "{line} -- cheaper than budgeted: lower the budget so the next regression is caught"
            )),
            Verdict::Over => failures.push(format!(
                "{line} -- over the +{}% tolerance",
                fuel::TOLERANCE_PERCENT
            )),
            Verdict::NoBudget => failures.push(format!("{line} -- add it to the budget file")),
            Verdict::NotMeasured => failures.push(format!(
                "{line} -- remove it from the budget file, or measure it again in tests/src/fuel.rs"
            )),
        }
    }
    println!("{}", report.join("\n"));
    if !failures.is_empty() {
        println!("{}", failures.join("\n"));
    }
    assert!(
        failures.is_empty(),
        "fuel budget check failed:\n{}\n\n\
         Fuel counts guest wasm instructions per request: it does not depend on the machine, so \
         this is a real change in the code path, not noise. If the change is intended, edit \
         bench/fuel-budget.json on purpose (set the path to the measured number) and say in the \
         commit message why the path got more expensive.",
        failures.join("\n"),
    );
}

#[test]
fn verdict_rules() {
    assert_eq!(fuel::verdict(Some(110), Some(100)), Verdict::Ok);
    assert_eq!(fuel::verdict(Some(111), Some(100)), Verdict::Over);
    assert_eq!(fuel::verdict(Some(90), Some(100)), Verdict::Ok);
    assert_eq!(fuel::verdict(Some(89), Some(100)), Verdict::Under);
    assert_eq!(fuel::verdict(Some(5), None), Verdict::NoBudget);
    assert_eq!(fuel::verdict(None, Some(100)), Verdict::NotMeasured);
}
