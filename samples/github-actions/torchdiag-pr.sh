#!/usr/bin/env bash
# The shell steps of torchdiag.yml, one phase per workflow step, so they can be run (and tested)
# outside GitHub Actions exactly as the workflow runs them:
#
#   torchdiag-pr.sh smoke     run $SMOKE in base/ and head/, interleaved: base head base head ...
#   torchdiag-pr.sh report    the HTML report of head's first run
#   torchdiag-pr.sh compare   torchdiag diff over all runs -> diff.md, status in $GITHUB_OUTPUT
#   torchdiag-pr.sh comment   the PR comment (comparison + head's report) -> comment.md
#   torchdiag-pr.sh gate      exit 1 on a confident regression, or when no comparison was made
#                             for a reason other than a broken base
#
# Run from the workspace holding base/ and head/ (the checkouts). Settings, from the workflow's
# env: SMOKE (the smoke job; it writes its record to "$RUN_JSON"), RUNS (runs a side),
# THRESHOLD_PCT; for comment, HTML_URL (link to the uploaded report, may be empty); for gate,
# STATUS (compare's status). GITHUB_OUTPUT and GITHUB_STEP_SUMMARY are optional outside Actions.
set -euo pipefail

workspace=$(pwd)
runs="${RUNS:-6}"
threshold="${THRESHOLD_PCT:-5}"
output="${GITHUB_OUTPUT:-/dev/null}"
summary="${GITHUB_STEP_SUMMARY:-/dev/null}"

smoke() {
    rm -rf runs/base runs/head
    mkdir -p runs/base runs/head
    local base_ok=1 i
    # Interleaved, so a machine that speeds up or slows down during the job (other jobs on the
    # host, thermal state) affects both sides alike rather than all of one side.
    for i in $(seq 1 "$runs"); do
        if [ "$base_ok" = 1 ]; then
            # A broken base (or one without the smoke job, when the PR adds it) must not hide
            # the head's report: the comparison is skipped instead.
            if ! (cd base && RUN_JSON="$workspace/runs/base/run$i.json" bash -c "$SMOKE"); then
                echo "::warning::the smoke job failed on the base branch: no comparison"
                base_ok=0
                rm -rf runs/base
            fi
        fi
        (cd head && RUN_JSON="$workspace/runs/head/run$i.json" bash -c "$SMOKE")
    done
}

report() {
    python -m torchdiag report runs/head/run1.json -o runs/head/report.html
}

compare() {
    if ! compgen -G "runs/base/run*.json" >/dev/null; then
        printf '_No base record (the smoke job failed on the base branch), so no comparison._\n' >diff.md
        echo "status=skipped" >>"$output"
        return 0
    fi
    # Exit 1 is the verdict (a confident slowdown), not a failure of this step: it is acted on
    # by the gate, after the comment is posted, so the PR always shows why it failed.
    local status=0
    python -m torchdiag diff runs/base runs/head --threshold "$threshold" --format md \
        -o diff.md || status=$?
    if [ "$status" -gt 1 ] || [ ! -s diff.md ]; then
        printf '_torchdiag diff could not compare the runs (exit status %s); see the job log._\n' \
            "$status" >diff.md
    fi
    echo "status=$status" >>"$output"
}

comment() {
    local link=()
    if [ -n "${HTML_URL:-}" ]; then
        link=(--html-url "$HTML_URL")
    fi
    # ${link[@]+...}: an empty array is "unbound" to `set -u` in older bash.
    python -m torchdiag report runs/head/run1.json --format md ${link[@]+"${link[@]}"} -o report.md
    {
        echo '<!-- torchdiag -->'
        cat diff.md
        echo
        echo "<details><summary>Full report of this PR's first run</summary>"
        echo
        cat report.md
        echo
        echo '</details>'
    } >comment.md
    cat comment.md >>"$summary"
}

gate() {
    case "${STATUS:-}" in
    0 | skipped) ;;
    1)
        echo "::error::HEAD is slower than base by more than $threshold% with confidence (see the PR comment)"
        exit 1
        ;;
    *)
        echo "::error::torchdiag diff could not compare the runs (exit status ${STATUS:-unknown})"
        exit 1
        ;;
    esac
}

case "${1:-}" in
smoke | report | compare | comment | gate) "$1" ;;
*)
    echo "usage: $0 smoke|report|compare|comment|gate" >&2
    exit 2
    ;;
esac
