#!/usr/bin/env python3
"""The console's review flow in a real browser: headless Chromium from Debian driven
over WebDriver (chromium-driver, python3-selenium). Run by the Rust tests
(crates/watchpost/tests/console_browser.rs for the agent's console,
crates/server/tests/console_browser.rs for the fleet server's) against a console they
started with data they made; exits non-zero with the failed step on the first problem.

Every page visited is saved as a PNG in --out. The flow:
  a viewer cannot acknowledge (403 page, no form offered); a state change without the
  CSRF token is refused; log in as an analyst; the overview's charts are drawn; search
  `isanomaly:true needsack:true host:H`; open the anomaly (reason, baseline explanation on
  the agent); acknowledge it with a comment; it leaves the waiting list and is in the
  audit log; an event whose fields hold HTML/JS shows them as text and no script runs
  (the browser's console log stays clean); acknowledge two selected events at once; the
  host page and the baselines render.
"""

import argparse
import os
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.support.ui import WebDriverWait


class Flow:
    def __init__(self, args):
        self.a = args
        self.n = 0
        opts = webdriver.ChromeOptions()
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,800",
                     "--no-first-run", "--disable-extensions"):
            opts.add_argument(flag)
        opts.binary_location = args.chromium
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.d = webdriver.Chrome(service=Service(args.driver), options=opts)
        self.d.set_page_load_timeout(30)
        os.makedirs(args.out, exist_ok=True)

    def step(self, text):
        print(f"[browser] {text}", flush=True)

    def shot(self, name):
        self.n += 1
        path = os.path.join(self.a.out, f"{self.n:02d}-{name}.png")
        self.d.save_screenshot(path)
        self.step(f"screenshot {path}")

    def go(self, path):
        self.d.get(self.a.base + path)

    def text(self):
        return self.d.find_element(By.TAG_NAME, "body").text

    def expect(self, cond, what):
        if not cond:
            self.shot("FAILED")
            raise AssertionError(f"{what}\n--- page {self.d.current_url} ---\n{self.text()[:3000]}")

    def until(self, cond, what, limit=10.0):
        """Waits for `cond()` (a navigation after a click may still be under way)."""
        end = time.time() + limit
        while time.time() < end:
            try:
                if cond():
                    return
            except Exception:  # the page changed under the lookup: look again
                pass
            time.sleep(0.1)
        self.expect(False, what)

    def login(self, user):
        self.go("/console/login")
        self.d.find_element(By.ID, "user").send_keys(user)
        self.d.find_element(By.ID, "password").send_keys(self.a.password)
        self.click_and_wait(self.d.find_element(By.CSS_SELECTOR, "section.login button[type=submit]"))
        self.until(lambda: "Overview" in self.d.title, f"{user} is logged in")

    def logout(self):
        self.click_and_wait(self.d.find_element(By.CSS_SELECTOR, "form.logout button"))
        self.until(lambda: "Log in" in self.d.title, "logged out")

    def post_form(self, action, fields):
        """Submits a form the page does not offer (as a forged or hand-made request would):
        WebDriver's script runs outside the page's CSP. Waits for the answer's page as
        click_and_wait does (a fixed pause was too short on a loaded machine)."""
        old = self.d.find_element(By.TAG_NAME, "html")
        self.d.execute_script(
            """
            const f = document.createElement('form');
            f.method = 'post'; f.action = arguments[0];
            for (const [k, v] of Object.entries(arguments[1])) {
              const i = document.createElement('input');
              i.type = 'hidden'; i.name = k; i.value = v; f.appendChild(i);
            }
            document.body.appendChild(f); f.submit();
            """,
            action, fields)
        self.wait_for_next_page(old)

    def csrf(self):
        return self.d.find_element(By.CSS_SELECTOR, "form.logout input[name=csrf]").get_attribute("value")

    def click_and_wait(self, element):
        """Clicks what submits a form and waits until the next page has loaded."""
        old = self.d.find_element(By.TAG_NAME, "html")
        element.click()
        self.wait_for_next_page(old)

    def wait_for_next_page(self, old):
        """Waits until the document `old` belonged to is gone and the next has loaded.
        Asked about an element of a document being replaced, chromedriver may answer
        "Node with given id does not belong to the document" instead of a stale element:
        that too means the old document is gone."""
        def gone(_):
            try:
                old.is_enabled()
                return False
            except (StaleElementReferenceException, WebDriverException):
                return True
        WebDriverWait(self.d, 30).until(gone)
        WebDriverWait(self.d, 30).until(
            lambda d: d.execute_script("return document.readyState") == "complete")

    def search(self, q):
        self.go("/console/events")
        box = self.d.find_element(By.ID, "q")
        box.clear()
        box.send_keys(q)
        self.click_and_wait(self.d.find_element(By.CSS_SELECTOR, "form.search button[type=submit]"))

    def result_ids(self):
        return [int(a.text) for a in self.d.find_elements(By.CSS_SELECTOR, "table.events tbody tr td:nth-child(2) a")
                if a.text.isdigit()] or \
               [int(a.text) for a in self.d.find_elements(By.CSS_SELECTOR, "table.events tbody tr td:nth-child(1) a")
                if a.text.isdigit()]

    def run(self):
        a = self.a
        host_q = f'isanomaly:true needsack:true host:{a.host}'

        # The login page, a wrong password.
        self.go("/console/")
        self.expect("Log in" in self.d.title, "an anonymous visit lands on the login form")
        self.shot("login")

        # A viewer: no acknowledge form, and a hand-made acknowledgement is refused.
        self.login(a.viewer)
        self.search(host_q)
        ids = self.result_ids()
        self.expect(ids, f"the viewer finds anomalies with `{host_q}`")
        self.go(f"/console/events/{ids[0]}")
        self.expect(not self.d.find_elements(By.CSS_SELECTOR, "form.ack"), "no ack form for a viewer")
        self.expect("cannot acknowledge" in self.text(), "the viewer is told why")
        token = self.csrf()
        self.post_form("/console/ack", {"id": str(ids[0]), "comment": "viewer try", "csrf": token})
        self.expect("Not allowed" in self.text() and "viewer" in self.text(), "a viewer's acknowledgement is refused")
        self.shot("viewer-refused")
        self.logout()

        # The analyst.
        self.login(a.analyst)
        # A state change without the CSRF token.
        self.post_form("/console/ack", {"id": str(ids[0]), "comment": "forged"})
        self.expect("Refused" in self.text() and "CSRF" in self.text(), "a change without the token is refused")
        self.shot("csrf-refused")

        # The overview: charts with bars.
        self.go("/console/")
        charts = self.d.find_elements(By.CSS_SELECTOR, "figure.chart")
        bars = self.d.find_elements(By.CSS_SELECTOR, "figure.chart svg rect")
        self.expect(len(charts) == 4 and len(bars) > 4, f"four charts with bars ({len(charts)} charts, {len(bars)} bars)")
        waiting_before = int(self.d.find_element(By.CSS_SELECTOR, "a.card .n").text)
        self.shot("overview")

        # Search, open the anomaly, see why.
        self.search(host_q)
        ids = self.result_ids()
        self.expect(ids, "the analyst finds the anomalies")
        self.shot("events-search")
        target = ids[0]
        self.go(f"/console/events/{target}")
        body = self.text()
        self.expect("Why it is an anomaly" in body, "the reason is shown")
        if a.mode == "local":
            self.expect("Baseline of" in body and "Values known for the key" in body,
                        "the baseline explanation (learning window, known values) is shown")
        self.shot("event-anomaly")

        # Acknowledge it with a comment.
        self.d.find_element(By.ID, "comment").send_keys("known admin laptop, ticket 4711")
        self.click_and_wait(self.d.find_element(By.CSS_SELECTOR, "form.ack button[type=submit]"))
        body = self.text()
        self.expect(f"Acknowledged by {a.analyst}" in body and "ticket 4711" in body, "the acknowledgement is shown")
        self.shot("event-acknowledged")

        # It left the waiting list, and the audit log has it.
        self.search(host_q)
        self.expect(target not in self.result_ids(), "the acknowledged event left the waiting list")
        self.go("/console/")
        waiting_after = int(self.d.find_element(By.CSS_SELECTOR, "a.card .n").text)
        self.expect(waiting_after == waiting_before - 1, f"waiting count {waiting_before} -> {waiting_after}")
        self.go("/console/audit")
        body = self.text()
        self.expect(f"event {target}" in body and "event.ack" in body and "console.denied" in body
                    and "console.csrf_refused" in body, "the audit log shows the ack and the refusals")
        self.shot("audit")

        # HTML/JS in event fields is text; no script runs.
        self.d.get_log("browser")  # drop what came before
        self.search(a.xss_query)
        xss = self.result_ids()
        self.expect(xss, f"the event with HTML in its fields is found by `{a.xss_query}`")
        self.go(f"/console/events/{xss[0]}")
        body = self.text()
        self.expect("<script>console.log('XSS-1')</script>" in body, "the script tag shows as text")
        self.expect("\"><img src=x onerror=console.log('XSS-2')>" in body, "the attribute breakout shows as text")
        self.expect(not self.d.find_elements(By.CSS_SELECTOR, "main img, main script"), "no element was injected")
        logs = [e for e in self.d.get_log("browser") if "XSS" in e.get("message", "")]
        self.expect(not logs, f"no script ran: {logs}")
        self.shot("event-xss-as-text")

        # Acknowledge two selected events at once.
        self.search(host_q)
        boxes = self.d.find_elements(By.CSS_SELECTOR, "table.events input[type=checkbox]")
        self.expect(len(boxes) >= 2, "two waiting events to select")
        chosen = [int(b.get_attribute("value")) for b in boxes[:2]]
        for b in boxes[:2]:
            b.click()
        self.d.find_element(By.ID, "comment").send_keys("bulk: maintenance window")
        self.click_and_wait(self.d.find_element(By.CSS_SELECTOR, "fieldset.ack button"))
        self.expect("2 event(s) acknowledged" in self.text(), "two acknowledged at once")
        self.expect(not set(chosen) & set(self.result_ids()), "both left the waiting list")
        self.shot("events-bulk-acknowledged")

        # Hosts and baselines.
        self.go("/console/hosts")
        if a.mode == "fleet":
            self.expect(a.host in self.text(), "the host list names the host")
            self.shot("hosts")
            self.click_and_wait(self.d.find_element(By.LINK_TEXT, a.host))
        body = self.text()
        self.expect("Sources" in body and "Actions" in body and "Checks" in body, "the host page renders its parts")
        self.shot("host")
        self.go("/console/baselines")
        self.expect("Baselines" in self.d.title, "the baselines page renders")
        if a.mode == "local":
            self.expect(self.d.find_elements(By.CSS_SELECTOR, "table.baselines tbody tr"), "baselines are listed")
            self.d.find_element(By.ID, "filter").send_keys(a.explain_filter)
            self.d.find_element(By.ID, "host").send_keys(a.host)
            self.d.find_element(By.ID, "key").send_keys(a.explain_key)
            self.click_and_wait(self.d.find_element(By.CSS_SELECTOR, "form.explain button"))
            self.expect("Values known for the key" in self.text(), "explain answers for a key")
        self.shot("baselines")
        self.step("all steps passed")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--base", required=True)
    p.add_argument("--mode", choices=["local", "fleet"], required=True)
    p.add_argument("--host", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--analyst", default="ann")
    p.add_argument("--viewer", default="vic")
    p.add_argument("--password", default="correct horse battery")
    p.add_argument("--xss-query", default="xss-probe")
    p.add_argument("--explain-filter", default="")
    p.add_argument("--explain-key", default="")
    p.add_argument("--chromium", default="/usr/bin/chromium")
    p.add_argument("--driver", default="/usr/bin/chromedriver")
    flow = Flow(p.parse_args())
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
