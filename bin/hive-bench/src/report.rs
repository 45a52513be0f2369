//! The results: rows and notes collected by the scenarios, printed as a Markdown table and
//! written as JSON with the machine they were measured on.

use std::path::Path;

use crate::stats::Row;

/// What the scenarios measured, in the order they ran.
#[derive(Debug, Default)]
pub struct Report {
    /// One row per measured quantity.
    pub rows: Vec<Row>,
    /// Derived figures and remarks, printed after the table.
    pub notes: Vec<String>,
}

impl Report {
    /// Prints the results as a Markdown table, then the notes.
    pub fn print(&self) {
        println!("| scenario | unit | n | median | p99 | min | max | target | met |");
        println!("|---|---|---|---|---|---|---|---|---|");
        for row in &self.rows {
            println!(
                "| {} | {} | {} | {:.3} | {} | {:.3} | {:.3} | {} | {} |",
                row.name,
                row.unit,
                row.samples,
                row.median,
                row.p99.map_or("—".to_owned(), |p99| format!("{p99:.3}")),
                row.min,
                row.max,
                row.target.as_deref().unwrap_or(""),
                match row.met {
                    Some(true) => "yes",
                    Some(false) => "**no**",
                    None => "",
                }
            );
        }
        for note in &self.notes {
            println!("\n{note}");
        }
    }

    /// Writes the command line, the machine, the rows and the notes to `out` as JSON.
    pub fn write(&self, out: &Path) -> anyhow::Result<()> {
        let json = serde_json::json!({
            "command": std::env::args().collect::<Vec<_>>().join(" "),
            "machine": machine(),
            "rows": self.rows,
            "notes": self.notes,
        });
        std::fs::write(out, serde_json::to_vec_pretty(&json)?)?;
        Ok(())
    }
}

/// The CPU model, the cores this process may use and the kernel release.
fn machine() -> serde_json::Value {
    use procfs::Current;
    let cpu = procfs::CpuInfo::current()
        .ok()
        .and_then(|info| info.model_name(0).map(str::to_owned));
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    // uname's release is the text of /proc/sys/kernel/osrelease; procfs only offers it parsed
    // to major.minor.patch, which drops the build suffix ("6.18.44-fc-v782").
    let kernel = nix::sys::utsname::uname()
        .map(|name| name.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    serde_json::json!({ "cpu": cpu, "cores": cores, "kernel": kernel.trim() })
}
