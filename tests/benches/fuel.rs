//! Guest instructions per request for every path in `src/fuel.rs`, next to
//! the budget in `bench/fuel-budget.json`, and the request's crossings of
//! the VM boundary (callbacks, host calls, allocations; host calls by
//! import), as markdown for `make bench`. The pass/fail check is `tests/fuel_budget.rs`.
//!
//!     cargo bench -p meshguard-e2e --bench fuel [-- <filter prefix>]

use meshguard_e2e::fuel;

fn main() {
    // cargo bench passes `--bench`; the first other argument is a filter.
    let filter = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .unwrap_or_default();
    let budget = match fuel::read_budget(&fuel::budget_file()) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let paths = fuel::paths_for(&filter);
    let results = fuel::measure_all_detailed(&paths);
    println!(
        "| path | guest instructions/request | budget | change | callbacks/request | host calls/request | allocations/request |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let mut failed = false;
    let mut breakdown = Vec::new();
    for (p, r) in paths.iter().zip(results) {
        let m = match r {
            Ok(m) => m,
            Err(e) => {
                eprintln!("{}: {e}", p.name);
                failed = true;
                continue;
            }
        };
        let c = &m.crossings;
        let per = fuel::Measured::per_request;
        let (budget, change) = match budget.get(p.name) {
            Some(&b) => (
                b.to_string(),
                format!("{:+.1}%", fuel::change_percent(m.instructions, b)),
            ),
            None => ("–".to_string(), "no budget".to_string()),
        };
        println!(
            "| {} | {} | {budget} | {change} | {} | {} | {} |",
            p.name,
            m.instructions,
            per(c.callbacks),
            per(c.host_calls),
            per(c.allocations)
        );
        let imports: Vec<String> = c
            .by_import
            .iter()
            .map(|(k, &n)| format!("{k} {}", per(n)))
            .collect();
        breakdown.push(format!("- {}: {}", p.name, imports.join(", ")));
    }
    println!();
    println!("Host calls per request by import:");
    println!();
    for line in breakdown {
        println!("{line}");
    }
    if failed {
        std::process::exit(1);
    }
}
