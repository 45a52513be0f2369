//! Shell completions and the man page, made by clap's own `clap_complete` and
//! `clap_mangen` from the same definitions as the parser, so they never disagree with it.

use std::io::Write;

/// Writes the completion script of `shell` for `rbee-hive` to `out`.
pub(crate) fn completions(
    shell: clap_complete::Shell,
    out: &mut impl Write,
) -> std::io::Result<()> {
    // Made in memory first: clap_complete panics when its writer fails (a closed pipe).
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut super::definition(), "rbee-hive", &mut script);
    out.write_all(&script)
}

/// Writes the man page (roff) to `out`: the top-level page, then a section per command
/// (its synopsis, description and options as subsections).
pub(crate) fn man_page(out: &mut impl Write) -> std::io::Result<()> {
    let command = super::definition();
    clap_mangen::Man::new(command.clone()).render(out)?;
    for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        let name = format!("rbee-hive {}", sub.get_name());
        let man = clap_mangen::Man::new(sub.clone().name(name.clone()).bin_name(name.clone()));
        let mut parts = Vec::new();
        man.render_synopsis_section(&mut parts)?;
        man.render_description_section(&mut parts)?;
        man.render_options_section(&mut parts)?;
        // One section per command; its own sections become subsections of it.
        writeln!(out, ".SH \"{}\"", name.to_uppercase())?;
        let parts = String::from_utf8_lossy(&parts).replace(".SH ", ".SS ");
        out.write_all(parts.as_bytes())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_know_the_commands_and_global_flags() {
        let mut script = Vec::new();
        completions(clap_complete::Shell::Bash, &mut script).unwrap();
        let script = String::from_utf8(script).unwrap();
        for word in ["spawn", "ps", "model", "--hive", "--json", "completions"] {
            assert!(script.contains(word), "{word} missing");
        }
    }

    #[test]
    fn the_man_page_is_roff_with_every_command() {
        let mut page = Vec::new();
        man_page(&mut page).unwrap();
        let page = String::from_utf8(page).unwrap();
        assert!(
            page.starts_with(".ie") || page.starts_with(".TH"),
            "{}",
            &page[..80]
        );
        assert!(page.contains(".TH rbee-hive"));
        for command in ["SPAWN", "PS", "STOP", "LOGS", "MODEL", "SERVE"] {
            let section = format!(".SH \"RBEE-HIVE {command}\"");
            assert!(page.contains(&section), "{command} missing");
        }
        // The daemon's flags are in its own section.
        assert!(page.contains("\\-\\-state\\-dir"));
    }
}
