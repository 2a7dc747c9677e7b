#!/usr/bin/env bash
# ebnf_check.sh PARSER_Y LANGUAGE_MD — the EBNF in docs/language.md against grammar/parser.y:
# the same nonterminals (one EBNF rule per parser rule), and every keyword and punctuation
# token of the parser written in the EBNF. Fails with the differences.
set -euo pipefail
parser=$1 doc=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The rules section of the Bison file: between the first two lines that are exactly %%.
awk '/^%%$/ {n++; next} n == 1' "$parser" > "$tmp/rules"
grep -oE '^[a-z_]+:' "$tmp/rules" | tr -d ':' | sort -u > "$tmp/parser_rules"
# The EBNF block of the reference.
awk '/^```ebnf$/ {on = 1; next} /^```$/ {on = 0} on' "$doc" > "$tmp/ebnf"
[ -s "$tmp/ebnf" ] || { echo "no \`\`\`ebnf block in $doc"; exit 1; }
grep -oE '^[a-z_]+ +=' "$tmp/ebnf" | tr -d ' =' | sort -u > "$tmp/ebnf_rules"

status=0
if ! diff -u "$tmp/parser_rules" "$tmp/ebnf_rules" > "$tmp/diff"; then
  echo "nonterminals differ (- parser.y, + language.md):"; cat "$tmp/diff"; status=1
fi
dups=$(grep -oE '^[a-z_]+ +=' "$tmp/ebnf" | tr -d ' =' | sort | uniq -d)
[ -z "$dups" ] || { echo "EBNF rules defined twice: $dups"; status=1; }

# Terminals: keyword aliases of %token lines ("'use'"), and character tokens in the rules.
{
  grep -E '^%token' "$parser" | grep -oE "\"'[a-z]+'\"" | tr -d "\"'"
  grep -oE "'[^']'" "$tmp/rules" | tr -d "'"
} | sort -u > "$tmp/terminals"
while read -r t; do
  grep -qF "\"$t\"" "$tmp/ebnf" || { echo "token \"$t\" of the parser is not in the EBNF"; status=1; }
done < "$tmp/terminals"
for t in NAME STRING NUMBER; do
  grep -qw "$t" "$tmp/ebnf" || { echo "terminal $t is not in the EBNF"; status=1; }
done
[ $status -eq 0 ] && echo "EBNF: $(wc -l < "$tmp/ebnf_rules") rules and $(wc -l < "$tmp/terminals") tokens match $parser"
exit $status
