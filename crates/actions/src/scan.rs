//! The `scan` action: a preset of `run` for the endpoint product's on-demand scanner.
//!
//! * `scanner = "sep"` (default on Windows): SEP's `DoScan.exe` (`C:\Program Files\Symantec\
//!   Symantec Endpoint Protection\DoScan.exe`) with `/ScanFile FILE`, or `/ScanAllDrives`
//!   for `full = true`; on Linux SEP's `sav manualscan --clscan FILE`
//!   (`/opt/Symantec/symantec_antivirus/sav`).
//! * `scanner = "clamav"` (default elsewhere): `clamdscan --fdpass --no-summary FILE`, or
//!   `--multiscan /` for a full scan. Exit status 1 means "a virus was found", which for a
//!   `run` is a failure: the job is counted as failed with that status in its reason, and
//!   the scanner's output is logged.
//!
//! `file` is a template (default `{{ file_path }}`, the SEP AV log's detected file); it is
//! one argv element, never a shell word. `program` overrides the scanner's path. Everything
//! else behaves as a `run` action (timeout, one scan at a time by default, output logged).

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use toml::de::DeValue;
use watchpost_event::ConfigError;

use crate::kit::{Tpl, bounded, deserialize};
use crate::run::RunSpec;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScan {
    scanner: Option<Spanned<String>>,
    file: Option<Spanned<String>>,
    full: Option<bool>,
    program: Option<Spanned<String>>,
    timeout_secs: Option<Spanned<u64>>,
    max_concurrent: Option<Spanned<u64>>,
}

/// Parses a `scan` table into the `run` it stands for.
pub(crate) fn parse(table: Spanned<DeValue<'_>>) -> Result<ScanSpec, Vec<ConfigError>> {
    let span = table.span();
    let raw: RawScan = deserialize(table)?;
    let mut errors = Vec::new();
    let scanner = raw
        .scanner
        .as_ref()
        .map(|s| s.get_ref().to_ascii_lowercase())
        .unwrap_or_else(|| if cfg!(windows) { "sep" } else { "clamav" }.to_owned());
    let at = raw.scanner.as_ref().map_or(span.clone(), |s| s.span());
    let fixed = |s: &str| Spanned::new(at.clone(), s.to_owned());
    let full = raw.full.unwrap_or(false);
    if full && raw.file.is_some() {
        errors.push(ConfigError::new(
            raw.file.as_ref().map_or(span.clone(), |f| f.span()),
            "`file` and `full = true` exclude each other",
        ));
    }
    let file = raw
        .file
        .clone()
        .unwrap_or_else(|| Spanned::new(span.clone(), "{{ file_path }}".to_owned()));
    let (program, mut args): (String, Vec<Spanned<String>>) =
        match (scanner.as_str(), cfg!(windows)) {
            ("sep", true) => (
                r"C:\Program Files\Symantec\Symantec Endpoint Protection\DoScan.exe".into(),
                if full {
                    vec![fixed("/ScanAllDrives")]
                } else {
                    vec![fixed("/ScanFile")]
                },
            ),
            ("sep", false) => (
                "/opt/Symantec/symantec_antivirus/sav".into(),
                if full {
                    vec![fixed("manualscan"), fixed("--scan"), fixed("/")]
                } else {
                    vec![fixed("manualscan"), fixed("--clscan")]
                },
            ),
            ("clamav", _) => (
                "clamdscan".into(),
                if full {
                    vec![fixed("--fdpass"), fixed("--multiscan"), fixed("/")]
                } else {
                    vec![fixed("--fdpass"), fixed("--no-summary")]
                },
            ),
            (other, _) => {
                errors.push(ConfigError::new(
                    at.clone(),
                    format!("scanner = \"{other}\": use \"sep\" or \"clamav\""),
                ));
                return Err(errors);
            }
        };
    if !full {
        args.push(file);
    }
    let program = raw
        .program
        .clone()
        .unwrap_or_else(|| Spanned::new(at.clone(), program));
    let args: Vec<Tpl> = args
        .iter()
        .filter_map(|a| Tpl::parse(a, &mut errors))
        .collect();
    let e = &mut errors;
    let timeout = bounded(
        raw.timeout_secs.as_ref(),
        1800,
        1..=86_400,
        "timeout_secs",
        e,
    );
    let max_concurrent = bounded(raw.max_concurrent.as_ref(), 1, 1..=16, "max_concurrent", e);
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(ScanSpec(RunSpec::preset(
        program,
        args,
        Duration::from_secs(timeout),
        max_concurrent as usize,
    )))
}

/// A `scan` action: a `run` preset, running and reporting as one, with a smaller queue.
#[derive(Debug, Clone)]
pub(crate) struct ScanSpec(pub(crate) RunSpec);

impl crate::kind::ActionKind for ScanSpec {
    fn kind(&self) -> &'static str {
        "run"
    }

    fn queue_capacity(&self) -> (u64, std::ops::RangeInclusive<u64>) {
        (100, 1..=100_000)
    }

    fn templates(&self) -> Vec<&Tpl> {
        self.0.templates().collect()
    }

    fn check(&self) -> Vec<ConfigError> {
        self.0.check()
    }

    fn concurrency(&self) -> usize {
        self.0.max_concurrent
    }

    fn work(
        &self,
        name: &str,
        rx: &crossbeam_channel::Receiver<crate::Job>,
        counters: &crate::control::Counters,
        ctl: &crate::control::Control,
    ) {
        self.0.work(name, rx, counters, ctl);
    }

    fn as_any(&self) -> &dyn std::any::Any {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use crate::config::test_util::*;

    #[test]
    fn presets_expand_to_their_scanner_and_the_file() {
        let a = parse_ok("[[action]]\nname = \"s\"\ntype = \"scan\"\nscanner = \"clamav\"\n");
        assert_eq!(a.kind(), "run");
        let argv = a.preview_argv().unwrap();
        assert_eq!(
            argv,
            ["clamdscan", "--fdpass", "--no-summary", "{{ file_path }}"]
        );
        let a = parse_ok(
            "[[action]]\nname = \"s\"\ntype = \"scan\"\nscanner = \"clamav\"\nfull = true\n",
        );
        assert_eq!(
            a.preview_argv().unwrap(),
            ["clamdscan", "--fdpass", "--multiscan", "/"]
        );
        let a = parse_ok(
            "[[action]]\nname = \"s\"\ntype = \"scan\"\nscanner = \"sep\"\nfile = \"{{ path }}\"\n",
        );
        let argv = a.preview_argv().unwrap();
        if cfg!(windows) {
            assert_eq!(argv[1..], ["/ScanFile", "{{ path }}"]);
            assert!(argv[0].ends_with(r"\DoScan.exe"));
        } else {
            assert_eq!(
                argv,
                [
                    "/opt/Symantec/symantec_antivirus/sav",
                    "manualscan",
                    "--clscan",
                    "{{ path }}"
                ]
            );
        }
        let a = parse_ok(
            "[[action]]\nname = \"s\"\ntype = \"scan\"\nscanner = \"clamav\"\nprogram = \"/usr/local/bin/clamdscan\"\n",
        );
        assert_eq!(a.preview_argv().unwrap()[0], "/usr/local/bin/clamdscan");
    }

    #[test]
    fn mistakes_have_places() {
        let text = "[[action]]\nname = \"s\"\ntype = \"scan\"\nscanner = \"mcafee\"\n";
        let errs = parse_one(text).unwrap_err();
        assert!(
            errs[0].message.contains("use \"sep\" or \"clamav\""),
            "{errs:?}"
        );
        assert_eq!(at(text, &errs[0].span), "\"mcafee\"");
        let errs =
            parse_one("[[action]]\nname = \"s\"\ntype = \"scan\"\nfull = true\nfile = \"x\"\n")
                .unwrap_err();
        assert!(errs[0].message.contains("exclude each other"), "{errs:?}");
        let errs =
            parse_one("[[action]]\nname = \"s\"\ntype = \"scan\"\nfile = \"{{ x | nope }}\"\n")
                .unwrap_err();
        assert!(!errs.is_empty());
        let errs =
            parse_one("[[action]]\nname = \"s\"\ntype = \"scan\"\npath = \"x\"\n").unwrap_err();
        assert!(errs[0].message.contains("path"), "{errs:?}");
    }
}
