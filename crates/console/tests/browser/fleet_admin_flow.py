#!/usr/bin/env python3
"""The fleet console's groups, configuration and commands in a real browser: headless
Chromium from Debian driven over WebDriver (chromium-driver, python3-selenium). Run by
crates/server/tests/console_browser.rs after the review flow, against the same server;
exits non-zero with the failed step on the first problem.

Every page visited is saved as a PNG in --out (numbered from --first). The flow:
  as an admin: the groups list; the group page; a configuration with an error is
  refused with its diagnostic shown at its line (file:line:column, the line marked);
  the corrected one is published; a second version changing one line is published;
  the group's hosts report what they did with it (one refused it, with its diagnostic,
  one runs it) and the group page shows both; the difference between the two versions
  shows that line removed and added; version 1's text;
  rolling back to it; the group's files: a Sigma rule file added and group.toml
  reading it, the rule broken in its editor and refused with the reason at the file and
  its line marked, corrected and published, the difference showing its changed line, a
  removal refused because group.toml still needs the file; as a viewer: no editor, a
  hand-made publication and a hand-made
  command are refused (403) and audited; as an analyst: the quarantined host's page
  offers the release button, releasing sends the command, listed with who sent it;
  "run checks now" from the command form.
"""

import argparse
import json
import sys
import urllib.request

from selenium.webdriver.common.by import By

sys.path.insert(0, __import__("os").path.dirname(__file__))
from console_flow import Flow  # noqa: E402

GOOD = """[[source]]
name = "av"
type = "sep_av_log"
path = "/var/log/sep/*.log"

[[filter]]
name = "av-detection"
match = { source = "av" }
actions = ["siem"]

[[action]]
name = "siem"
type = "syslog"
target = "udp://127.0.0.1:514"
"""


RULE = """title: Failed logon
id: 5f2a2b3c-1d4e-4f60-8a9b-0c1d2e3f4a5b
logsource: { product: windows, service: security }
detection:
  sel: { EventID: 4625 }
  condition: sel
level: high
"""

RULES = """
[[rules]]
name = "lab"
sigma = "rules/"
actions = ["siem"]
"""


class AdminFlow(Flow):
    def report(self, credential, version, ok, diagnostics):
        """What an agent reports after handling a version (POST /api/v1/report)."""
        body = json.dumps({"config": {"version": version, "ok": ok, "generation": 7,
                                      "diagnostics": diagnostics}}).encode()
        req = urllib.request.Request(self.a.base + "/api/v1/report", data=body, method="POST",
                                     headers={"Authorization": f"Bearer {credential}",
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            self.expect(r.status == 200, f"the report is taken ({r.status})")

    def set_text(self, element_id, text):
        box = self.d.find_element(By.ID, element_id)
        box.clear()
        box.send_keys(text)

    def show(self, css):
        """Scrolls what a screenshot is about into the middle of the window."""
        self.d.execute_script("arguments[0].scrollIntoView({block: 'center'})",
                              self.d.find_element(By.CSS_SELECTOR, css))

    def publish(self, text, comment):
        self.set_text("config", text)
        self.set_text("comment", comment)
        self.click_and_wait(self.d.find_element(By.CSS_SELECTOR, "form.publish button[type=submit]"))

    def run(self):
        a = self.a
        group_path = f"/console/groups/{a.group}"

        # The admin: the groups list, the group.
        self.login(a.admin)
        self.go("/console/groups")
        self.expect("Groups" in self.d.title and a.group in self.text(), "the groups list names the group")
        self.shot("groups")
        self.click_and_wait(self.d.find_element(By.LINK_TEXT, a.group))
        self.expect(self.d.find_elements(By.ID, "config"), "the admin gets the editor")
        self.expect("No configuration has been published" in self.text(), "no version yet")
        self.shot("group")

        # An error: refused, shown at its line.
        bad = GOOD.replace('actions = ["siem"]', 'actions = ["nope"]')
        self.publish(bad, "first try")
        body = self.text()
        self.expect("nothing was published" in body, "the publication is refused")
        marked = self.d.find_elements(By.CSS_SELECTOR, "table.listing tr.bad")
        self.expect(len(marked) == 1 and marked[0].get_attribute("id") == "L9"
                    and 'actions = ["nope"]' in marked[0].text,
                    f"line 9 is marked ({[m.get_attribute('id') for m in marked]})")
        diag = self.d.find_element(By.CSS_SELECTOR, "table.listing tr.bad + tr.diag").text
        self.expect("group.toml:9:12" in diag and "unknown action `nope`" in diag,
                    f"the diagnostic follows its line: {diag}")
        self.expect(self.d.find_element(By.ID, "config").get_attribute("value") == bad.rstrip("\n") or
                    'actions = ["nope"]' in self.d.find_element(By.ID, "config").get_attribute("value"),
                    "the text is kept in the editor")
        self.show("table.listing tr.bad")
        self.shot("publish-refused")

        # Corrected: version 1; then version 2 changing one line.
        self.publish(GOOD, "syslog to the lab SIEM")
        self.expect("Version 1 published" in self.text(), "version 1 is published")
        self.publish(GOOD.replace("127.0.0.1", "10.0.0.5"), "the new SIEM")
        self.expect("Version 2 published" in self.text(), "version 2 is published")
        rows = self.d.find_elements(By.CSS_SELECTOR, "table.versions tbody tr")
        self.expect(len(rows) == 2 and a.admin in rows[0].text and "the new SIEM" in rows[0].text,
                    "both versions are listed with who and why")
        self.shot("group-published")

        # The hosts report: one refused version 2 (its diagnostic shown, escaped), one runs it.
        self.report(a.refusing_credential, 2, False,
                    "group.toml:14:10: error: cannot reach udp://10.0.0.5:514 <from this host>")
        self.report(a.running_credential, 2, True, "")
        self.go(group_path)
        states = {r.find_element(By.CSS_SELECTOR, "td").text: r.text
                  for r in self.d.find_elements(By.CSS_SELECTOR, "table.hostconfig tbody tr")}
        self.expect("refused" in states.get("LAPTOP-7", "")
                    and "cannot reach udp://10.0.0.5:514 <from this host>" in states.get("LAPTOP-7", ""),
                    f"LAPTOP-7 refused version 2, with why: {states}")
        self.expect("runs the published version" in states.get("DESK-2", ""), f"DESK-2 runs it: {states}")
        self.expect("1 on the published version, 0 behind, 1 rejecting it" in self.text(), "the counts")
        self.shot("group-hosts-reported")

        # The difference.
        self.click_and_wait(self.d.find_element(By.LINK_TEXT, "changes from 1"))
        dels = [r.text for r in self.d.find_elements(By.CSS_SELECTOR, "table.diff tr.del")]
        adds = [r.text for r in self.d.find_elements(By.CSS_SELECTOR, "table.diff tr.add")]
        self.expect(len(dels) == 1 and "127.0.0.1" in dels[0] and len(adds) == 1 and "10.0.0.5" in adds[0],
                    f"one line removed and one added: {dels} {adds}")
        self.shot("diff")

        # Version 1, and rolling back to it.
        self.go(f"{group_path}/versions/1")
        self.expect("udp://127.0.0.1:514" in self.text(), "version 1's text")
        self.shot("version")
        self.click_and_wait(self.d.find_element(By.XPATH, "//button[contains(., 'Roll back to version 1')]"))
        self.expect("Rolled back: version 1 is published again" in self.text(), "rolled back")
        desk = [r.text for r in self.d.find_elements(By.CSS_SELECTOR, "table.hostconfig tbody tr") if r.text.startswith("DESK-2")]
        self.expect(desk and "runs another version, not the published one" in desk[0], f"DESK-2 runs version 2, not the published 1: {desk}")
        published = self.d.find_elements(By.CSS_SELECTOR, "table.versions tbody tr")[1].text
        self.expect("published" in published, f"version 1 is the published one: {published}")
        self.shot("rolled-back")

        # The group's files: a rule added (version 3), group.toml reading it (4).
        self.set_text("new-name", "rules/failed_logon.yml")
        self.set_text("new-content", RULE)
        self.set_text("new-comment", "a rule for failed logons")
        self.click_and_wait(self.d.find_element(By.CSS_SELECTOR, "form.addfile button[type=submit]"))
        self.expect("Version 3 published" in self.text(), "the file is added as version 3")
        self.publish(GOOD + RULES, "Sigma rules on")
        self.expect("Version 4 published" in self.text(), "group.toml reads the rules in version 4")
        self.show("table.files")
        self.shot("group-files")
        # The rule broken in its editor: refused, the reason at the file, its line marked.
        self.click_and_wait(self.d.find_element(By.LINK_TEXT, "rules/failed_logon.yml"))
        self.expect("title: Failed logon" in self.text(), "the file's page shows it")
        self.shot("file")
        self.set_text("content", RULE.replace("  condition: sel\n", "  condition: sel\n  - oops\n"))
        self.click_and_wait(self.d.find_element(By.CSS_SELECTOR, "form.file button[type=submit]"))
        body = self.text()
        self.expect("This file does not load; nothing was published" in body, "the broken rule is refused")
        reason = self.d.find_element(By.CSS_SELECTOR, "p.filediag").text
        self.expect("rules/failed_logon.yml:7" in reason and "YAML" in reason,
                    f"the reason is shown at the file and its line: {reason}")
        marked = self.d.find_elements(By.CSS_SELECTOR, "table.listing tr.bad")
        self.expect(len(marked) == 1 and marked[0].get_attribute("id") == "L7" and "- oops" in marked[0].text,
                    f"line 7 is marked ({[m.get_attribute('id') for m in marked]})")
        self.expect("- oops" in self.d.find_element(By.ID, "content").get_attribute("value"),
                    "the text is kept in the editor")
        self.show("table.listing tr.bad")
        self.shot("file-refused")
        # Corrected: version 5; the difference shows the rule's changed line.
        self.set_text("content", RULE.replace("4625", "4624"))
        self.set_text("file-comment", "successful logons too")
        self.click_and_wait(self.d.find_element(By.CSS_SELECTOR, "form.file button[type=submit]"))
        self.expect("Version 5 published" in self.text(), "the corrected rule is version 5")
        self.shot("file-published")
        self.go(f"{group_path}/diff?from=4&to=5")
        dels = [r.text for r in self.d.find_elements(By.CSS_SELECTOR, "table.diff tr.del")]
        adds = [r.text for r in self.d.find_elements(By.CSS_SELECTOR, "table.diff tr.add")]
        self.expect("rules/failed_logon.yml" in self.text() and len(dels) == 1 and "4625" in dels[0]
                    and len(adds) == 1 and "4624" in adds[0], f"the file's changed line: {dels} {adds}")
        self.show("table.diff")
        self.shot("diff-files")
        # Removing the only rule while group.toml reads the folder: refused at its line.
        self.go(group_path)
        self.click_and_wait(self.d.find_element(By.CSS_SELECTOR, "table.files form button"))
        self.expect("nothing was published" in self.text(), "the removal is refused")
        marked = self.d.find_elements(By.CSS_SELECTOR, "table.listing tr.bad")
        self.expect(marked and "sigma" in marked[0].text, f"group.toml's rules line is marked: {[m.text for m in marked]}")
        self.show("table.listing tr.bad")
        self.shot("remove-refused")
        self.logout()

        # A viewer: no editor; hand-made changes are refused.
        self.login(a.viewer)
        self.go(group_path)
        self.expect(not self.d.find_elements(By.ID, "config") and "cannot publish configuration" in self.text(),
                    "no editor for a viewer")
        token = self.csrf()
        self.post_form(f"{group_path}/publish", {"csrf": token, "config": GOOD, "comment": "viewer try"})
        self.expect("Not allowed" in self.text() and "an admin can" in self.text(), "a viewer's publication is refused")
        self.shot("viewer-publish-refused")
        self.go(f"/console/hosts/{a.host_id}")
        self.expect(not self.d.find_elements(By.CSS_SELECTOR, "form.release")
                    and "cannot release a quarantine" in self.text(), "no release button for a viewer")
        self.post_form(f"/console/hosts/{a.host_id}/command", {"csrf": token, "kind": "quarantine_release"})
        self.expect("Not allowed" in self.text() and "cannot send commands" in self.text(),
                    "a viewer's command is refused")
        self.go("/console/audit")
        denied = [r.text for r in self.d.find_elements(By.CSS_SELECTOR, "table.audit tbody tr")
                  if "console.denied" in r.text]
        self.expect(any(f"publish group {a.group}" in t for t in denied)
                    and any(f"command to host {a.host_id}" in t for t in denied),
                    f"both refusals are audited: {denied}")
        self.logout()

        # The analyst releases the quarantine from the host page.
        self.login(a.analyst)
        self.go(f"/console/hosts/{a.host_id}")
        self.expect("Quarantined since" in self.text(), "the host is quarantined")
        self.show("form.release")
        self.shot("host-quarantined")
        self.set_text("release-reason", "false positive, ticket 4712")
        self.click_and_wait(self.d.find_element(By.CSS_SELECTOR, "form.release button"))
        self.expect("sent; the host receives it on its next poll" in self.text(), "the release is sent")
        first = self.d.find_element(By.CSS_SELECTOR, "table.commands tbody tr").text
        self.expect("quarantine_release" in first and a.analyst in first and "ticket 4712" in first,
                    f"the command is listed with who sent it: {first}")
        # Another command from the form.
        from selenium.webdriver.support.ui import Select
        Select(self.d.find_element(By.ID, "kind")).select_by_value("run_checks")
        self.click_and_wait(self.d.find_element(By.CSS_SELECTOR, "form.command button"))
        first = self.d.find_element(By.CSS_SELECTOR, "table.commands tbody tr").text
        self.expect("run_checks" in first and a.analyst in first, f"run checks is listed: {first}")
        self.show("table.commands")
        self.shot("host-commands")
        self.step("all steps passed")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--base", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--host-id", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--first", type=int, default=20)
    p.add_argument("--refusing-credential", required=True)
    p.add_argument("--running-credential", required=True)
    p.add_argument("--admin", default="ada")
    p.add_argument("--analyst", default="ann")
    p.add_argument("--viewer", default="vic")
    p.add_argument("--password", default="correct horse battery")
    p.add_argument("--chromium", default="/usr/bin/chromium")
    p.add_argument("--driver", default="/usr/bin/chromedriver")
    args = p.parse_args()
    flow = AdminFlow(args)
    flow.n = args.first
    try:
        flow.run()
    except Exception as e:  # an assertion, or WebDriver's own errors
        print(f"[browser] FAILED: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        return 1
    finally:
        flow.d.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
