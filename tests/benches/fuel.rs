//! Guest instructions per request for every path in `src/fuel.rs`, next to
//! the budget in `bench/fuel-budget.json`, as a markdown table for
//! `make bench`. The pass/fail check is `tests/fuel_budget.rs`.
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
    let results = fuel::measure_all(&paths);
    println!("| path | guest instructions/request | budget | change |");
    println!("|---|---:|---:|---:|");
    let mut failed = false;
    for (p, r) in paths.iter().zip(results) {
        match (r, budget.get(p.name)) {
            (Ok(m), Some(&b)) => println!(
                "| {} | {m} | {b} | {:+.1}% |",
                p.name,
                fuel::change_percent(m, b)
            ),
            (Ok(m), None) => println!("| {} | {m} | – | no budget |", p.name),
            (Err(e), _) => {
                eprintln!("{}: {e}", p.name);
                failed = true;
            }
        }
    }
    if failed {
        std::process::exit(1);
    }
}
