"""Headless Chromium for page tests: Debian's chromium and chromium-driver, installed when missing (as root).

Locally a test without a browser skips; under ``CI=true`` it fails. Nothing is
downloaded by a test tool: Selenium drives the distribution's chromedriver.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from .services import IN_CI

CHROMIUM = '/usr/bin/chromium'
CHROMEDRIVER = '/usr/bin/chromedriver'
FLAGS = ('--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync',
         '--disable-dev-shm-usage', '--window-size=1400,900')


def _apt_install(*packages: str) -> None:
    env = {**os.environ, 'DEBIAN_FRONTEND': 'noninteractive'}
    cmd = ['apt-get', 'install', '-y', '-q', *packages]
    if subprocess.run(cmd, env=env, capture_output=True, timeout=900).returncode != 0:
        subprocess.run(['apt-get', 'update', '-q'], env=env, capture_output=True, timeout=600, check=True)
        subprocess.run(cmd, env=env, capture_output=True, timeout=900, check=True)


def require_chromium() -> None:
    """Make sure Chromium and its driver are there: install them (root with apt-get), or skip/fail."""
    if os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER):
        return
    problem = 'chromium and chromium-driver are not installed'
    if shutil.which('apt-get') and os.geteuid() == 0:
        try:
            _apt_install('chromium', 'chromium-driver')
        except (subprocess.SubprocessError, OSError) as exc:
            problem = f'{problem} and apt-get failed: {exc}'
        if os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER):
            return
    if IN_CI:
        pytest.fail(f'{problem} (CI=true: a missing browser is a failure)')
    pytest.skip(problem)


@contextmanager
def chromium(profile: Path) -> Iterator[Any]:
    """A headless Chromium WebDriver session with a fresh profile; its console log is kept."""
    require_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f'--user-data-dir={profile}')
    options.set_capability('goog:loggingPrefs', {'browser': 'ALL'})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        driver.set_page_load_timeout(30)
        yield driver
    finally:
        driver.quit()
