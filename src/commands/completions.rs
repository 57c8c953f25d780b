//! `lorch completions bash|zsh|fish` and `lorch man` (docs/completions.md): generated from the
//! clap definition of the command line, so they never fall behind it. The bash script also
//! completes job names, which it asks `lorch __complete-jobs` for: the same metadata cache as
//! `jobs list`, so completing loads no plugin lorch has seen before.

use clap::CommandFactory as _;

use crate::cli::{Cli, CompletionShell};
use crate::error::{Exit, Result};
use crate::output;
use crate::plugins::Catalog;

/// After the generated bash function: `PACKAGE/JOB` where a command takes one (`run`,
/// `backfill`, `state set|reset|show`), `PACKAGE` then `JOB` where it takes two (`run-job`,
/// `jobs show`), else what clap generated. Global flags before the command are skipped.
const BASH_JOBS: &str = r#"
_lorch_jobs() {
    local cur=$1 args=() flags=() i word
    for ((i = 1; i < COMP_CWORD; i++)); do
        word=${COMP_WORDS[i]}
        case $word in
            --plugin-path|--config) flags+=("$word" "${COMP_WORDS[i+1]}"); ((i++)) ;;
            --allow-insecure-plugins) flags+=("$word") ;;
            -*) ;;
            *) args+=("$word") ;;
        esac
    done
    local want
    case "${args[0]} ${args[1]}:${#args[@]}" in
        "run :1"|"backfill :1"|"state set:2"|"state reset:2"|"state show:2") want=ids ;;
        "run-job :1"|"jobs show:2") want=packages ;;
        "run-job ${args[1]}:2"|"jobs show:3") want=names ;;
        *) return 1 ;;
    esac
    local jobs
    jobs=$("${COMP_WORDS[0]}" "${flags[@]}" __complete-jobs 2>/dev/null) || return 1
    case $want in
        packages) jobs=$(cut -d/ -f1 <<<"$jobs" | sort -u) ;;
        names) jobs=$(sed -n "s|^${args[${#args[@]}-1]}/||p" <<<"$jobs") ;;
    esac
    COMPREPLY=($(compgen -W "$jobs" -- "$cur"))
}

_lorch_with_jobs() {
    local cur=${COMP_WORDS[COMP_CWORD]}
    if [[ $cur != -* ]] && _lorch_jobs "$cur"; then
        return 0
    fi
    _lorch "$@"
}

complete -F _lorch_with_jobs -o bashdefault -o default lorch
"#;

/// `lorch completions SHELL`.
pub fn completions(shell: CompletionShell) -> Result<Exit> {
    let mut script = Vec::new();
    let mut command = Cli::command();
    let target = match shell {
        CompletionShell::Bash => clap_complete::Shell::Bash,
        CompletionShell::Zsh => clap_complete::Shell::Zsh,
        CompletionShell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(target, &mut command, "lorch", &mut script);
    let mut script = String::from_utf8_lossy(&script).into_owned();
    if shell == CompletionShell::Bash {
        script.push_str(BASH_JOBS);
    }
    output::print_raw(&script)?;
    Ok(Exit::Success)
}

/// `lorch man`: the manual page of lorch and its commands, in roff.
pub fn man() -> Result<Exit> {
    let mut page = Vec::new();
    clap_mangen::Man::new(Cli::command())
        .render(&mut page)
        .map_err(anyhow::Error::from)?;
    output::print_raw(&String::from_utf8_lossy(&page))?;
    Ok(Exit::Success)
}

/// `lorch __complete-jobs`: every `PACKAGE/JOB`, one a line, for the completion scripts.
pub fn jobs(catalog: &Catalog) -> Result<Exit> {
    let text: String = catalog
        .jobs()
        .map(|job| format!("{}\n", job.id()))
        .collect();
    output::print(&text)?;
    Ok(Exit::Success)
}
