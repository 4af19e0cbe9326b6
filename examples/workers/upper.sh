#!/usr/bin/env bash
# A command-pool worker in bash: answers each request with its text upper-cased.
#
#   {"id":7,"data":"hello"}  ->  {"id":7,"result":"HELLO"}
#   {"id":9,"ping":true}     ->  {"id":9,"result":"pong"}
#
# procvisor writes every request as compact JSON that starts with {"id":N, so plain bash
# pattern matching is enough for simple data; use jq (or a real language) for anything more.
# Exits at end of file on stdin. See docs/worker-protocol.md.
while IFS= read -r line; do
    if [[ ! $line =~ ^\{\"id\":([0-9]+), ]]; then
        echo "upper.sh: not a request: $line" >&2
        exit 1
    fi
    id=${BASH_REMATCH[1]}
    if [[ $line == *',"ping":true}' ]]; then
        printf '{"id":%s,"result":"pong"}\n' "$id"
    elif [[ $line =~ ,\"data\":\"([^\"\\]*)\"\}$ ]]; then
        printf '{"id":%s,"result":"%s"}\n' "$id" "${BASH_REMATCH[1]^^}"
    else
        printf '{"id":%s,"error":"data must be a string without quotes or backslashes"}\n' "$id"
    fi
done
