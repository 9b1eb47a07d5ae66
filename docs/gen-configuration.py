#!/usr/bin/env python3
# Writes the flag table of docs/CONFIGURATION.md from `shardcast --help` (the one
# source of truth: clap doc comments in src/config/). Usage, from the repository root:
#   python3 docs/gen-configuration.py target/release/shardcast > /tmp/flags.md
import re,subprocess,sys
out=subprocess.run([sys.argv[1] if len(sys.argv)>1 else "target/release/shardcast","--help"],capture_output=True,text=True).stdout
lines=out.splitlines()
i=lines.index("Options:")+1
entries=[];cur=None
for l in lines[i:]:
    m=re.match(r"^\s{2,6}(?:-\w, )?(--[\w-]+)(?: <(\w+)>)?\s*$",l)
    if m:
        cur={"flag":m.group(1),"val":m.group(2),"text":[],"env":"","default":"","values":[]}
        entries.append(cur);continue
    if cur is None: continue
    s=l.strip()
    if not s: continue
    m=re.match(r"\[env: (\w+)(=[^\]]*)?\]",s)
    if m: cur["env"]=m.group(1);continue
    m=re.match(r"\[default: (.*)\]",s)
    if m: cur["default"]=m.group(1);continue
    m=re.match(r"\[possible values: (.*)\]",s)
    if m: cur["values"]=m.group(1).split(", ");continue
    if s.startswith("Possible values:"): continue
    m=re.match(r"- ([\w-]+):\s+(.*)",s)
    if m: cur["values"].append(f"`{m.group(1)}`: {m.group(2)}");continue
    cur["text"].append(s)
def esc(t): return t.replace("|","\\|")
print("| flag | env | default | meaning |\n|---|---|---|---|")
for e in entries:
    if e["flag"] in ("--help","--version"): continue
    flag=f'`{e["flag"]}`' if not e["val"] else f'`{e["flag"]} <{e["val"].lower()}>`'
    text=" ".join(e["text"])
    if e["values"]: text=text.rstrip(".")+". Values: "+"; ".join(v if v.startswith("`") else f"`{v}`" for v in e["values"])+"."
    print(f'| {flag} | `{e["env"]}` | {("`"+e["default"]+"`") if e["default"] else ""} | {esc(text)} |')
