//! Test helper (not shipped): a stand-in for a browser. Writes every argument after the
//! first, one per line, to the file named by the first, then exits 0. The `open_url`
//! tests configure it as `browser = [probe, out_file]`, so the file ends up holding the URL.

use std::io::Write as _;

fn main() {
    let mut args = std::env::args_os().skip(1);
    let Some(out) = args.next() else {
        eprintln!("usage: watchpost-argv-probe OUT_FILE ARGS...");
        std::process::exit(2);
    };
    let mut text = String::new();
    for a in args {
        text.push_str(&a.to_string_lossy());
        text.push('\n');
    }
    // Written to a temporary name and renamed, so a reader never sees half of it.
    let tmp = std::path::PathBuf::from(format!("{}.tmp", out.to_string_lossy()));
    let written = std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .and_then(|()| std::fs::rename(&tmp, &out));
    if let Err(e) = written {
        eprintln!("watchpost-argv-probe: {e}");
        std::process::exit(1);
    }
}
