//! The shape of the code, checked: imports go one way (no module of `src/` uses a module that
//! uses it back, however long the loop), command modules do not call each other, and the code
//! cites the project's own docs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::common::REPO;

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// The first segment of every `crate::` path in `text`, including each item of a
/// `use crate::{a, b::c}` group.
fn crate_references(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (at, _) in text.match_indices("crate::") {
        let rest = &text[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let (mut depth, mut item) = (0, String::new());
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        found.insert(first_segment(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            found.insert(first_segment(&item));
        } else {
            found.insert(first_segment(rest));
        }
    }
    found.remove("");
    found
}

fn first_segment(path: &str) -> String {
    path.trim()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// `src/runner/mod.rs` and `src/runner/ring.rs` are both `runner`.
fn top_module(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).unwrap();
    let first = relative
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_str()
        .unwrap();
    first.trim_end_matches(".rs").to_owned()
}

#[test]
fn no_module_imports_a_module_that_imports_it_back() {
    let src = Path::new(REPO).join("src");
    let mut uses: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in rust_files(&src) {
        let module = top_module(&src, &file);
        // Comments may name any module; only code imports.
        let text: String = std::fs::read_to_string(&file)
            .unwrap()
            .lines()
            .filter(|line| !line.trim_start().starts_with("//"))
            .map(|line| format!("{line}\n"))
            .collect();
        let targets = crate_references(&text);
        let entry = uses.entry(module.clone()).or_default();
        entry.extend(targets.into_iter().filter(|t| *t != module));
    }
    // `lib` is the crate root: everything is declared there, nothing may use it back.
    uses.remove("lib");
    assert!(uses.len() > 10, "the parser found too little: {uses:?}");

    // Depth-first search for a loop, reporting the first one found whole.
    fn visit(
        module: &str,
        uses: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|m| m == module) {
            let mut cycle = path[start..].to_vec();
            cycle.push(module.to_owned());
            return Some(cycle);
        }
        if !done.insert(module.to_owned()) {
            return None;
        }
        path.push(module.to_owned());
        for next in uses.get(module).into_iter().flatten() {
            if let Some(cycle) = visit(next, uses, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    for module in uses.keys() {
        if let Some(cycle) = visit(module, &uses, &mut Vec::new(), &mut done) {
            panic!("import cycle: {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn command_modules_do_not_call_each_other() {
    let commands = Path::new(REPO).join("src/commands");
    let names: Vec<String> = rust_files(&commands)
        .iter()
        .map(|f| f.file_stem().unwrap().to_str().unwrap().to_owned())
        .filter(|n| n != "mod")
        .collect();
    assert!(names.contains(&"run".to_owned()), "{names:?}");
    for name in &names {
        let text = std::fs::read_to_string(commands.join(format!("{name}.rs"))).unwrap();
        for other in names.iter().filter(|o| *o != name) {
            assert!(
                !text.contains(&format!("super::{other}::"))
                    && !text.contains(&format!("super::{{{other}"))
                    && !text.contains(&format!("commands::{other}")),
                "src/commands/{name}.rs calls the command module {other}: move what they share to a module both use"
            );
        }
    }
}

#[test]
fn code_cites_the_projects_docs_not_the_spec() {
    let mut cited = Vec::new();
    for dir in ["src", "tests", "plugin-api", "examples", "benches"] {
        for file in rust_files(&Path::new(REPO).join(dir)) {
            let text = std::fs::read_to_string(&file).unwrap();
            for (n, line) in text.lines().enumerate() {
                // Spelled in two pieces so this file does not cite itself.
                if line.contains(concat!("SPEC ", "§")) {
                    cited.push(format!("{}:{}: {line}", file.display(), n + 1));
                }
            }
        }
    }
    assert!(
        cited.is_empty(),
        "cite README.md or docs/ instead:\n{}",
        cited.join("\n")
    );
}

#[test]
fn only_the_command_line_knows_clap() {
    let src = Path::new(REPO).join("src");
    let mut found = Vec::new();
    for file in rust_files(&src) {
        let relative = file.strip_prefix(&src).unwrap();
        if relative.starts_with("cli.rs") || relative.starts_with("commands") {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            if line.contains("clap::") || line.contains("use clap") {
                found.push(format!(
                    "src/{}:{}: {}",
                    relative.display(),
                    n + 1,
                    line.trim()
                ));
            }
        }
    }
    assert!(
        found.is_empty(),
        "clap belongs to src/cli.rs and src/commands/: give the domain a plain type (a closed vocabulary with ALL and parse) and parse it in cli.rs:\n{}",
        found.join("\n")
    );
}

/// A file you can hold in your head (issue 26's measure: `just`'s and ripgrep's files).
const MOST_LINES: usize = 800;

#[test]
fn no_source_file_is_longer_than_one_can_hold_in_ones_head() {
    let src = Path::new(REPO).join("src");
    let long: Vec<String> = rust_files(&src)
        .into_iter()
        .filter_map(|file| {
            let lines = std::fs::read_to_string(&file).unwrap().lines().count();
            (lines > MOST_LINES).then(|| format!("{} ({lines} lines)", file.display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "split these by what they hold, one concept a file, under {MOST_LINES} lines (as config/ and events/store/ are):\n{}",
        long.join("\n")
    );
}

/// `commands/` turns arguments into calls and prints: engines live in their domain modules and
/// what is shown in `views/` (issue 26's ceiling; it was 5,940 lines when engines lived there).
#[test]
fn the_commands_stay_a_thin_layer() {
    let commands = Path::new(REPO).join("src/commands");
    let lines: usize = rust_files(&commands)
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap().lines().count())
        .sum();
    assert!(
        lines <= 2500,
        "src/commands/ has {lines} lines, over 2,500: move the engine it grew into its domain module (as fleet/, pipelines/, schedule/tick.rs) and what it prints into views/"
    );
}

/// The layers go one way: the command line (`cli`, `commands`) calls the domain and `views`,
/// never the reverse, so that another front (`lorch serve`) can call the same domain and views.
#[test]
fn the_domain_knows_neither_the_command_line_nor_its_commands() {
    let src = Path::new(REPO).join("src");
    let mut found = Vec::new();
    for file in rust_files(&src) {
        let module = top_module(&src, &file);
        let text = std::fs::read_to_string(&file).unwrap();
        for (layer, allowed) in [
            ("cli", &["commands", "lib"][..]),
            ("commands", &["lib"][..]),
            ("views", &["commands", "lib"][..]),
        ] {
            if module != layer
                && !allowed.contains(&module.as_str())
                && crate_references(&text).contains(layer)
            {
                found.push(format!("{} uses crate::{layer}", file.display()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "the domain must not reach up into the command line: pass it plain values instead (as plan::RunOptions):\n{}",
        found.join("\n")
    );
}
