# Copyright (c) mmrsa contributors. All rights reserved.
"""The documentation: a short README with CI's test command, links that
resolve, every compat fix documented, and the license."""
import ast
import re
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
README = REPO_ROOT / 'README.md'
DOCS = REPO_ROOT / 'docs'
#: The README of an MMAction2 project is what a newcomer reads in five
#: minutes; depth goes to docs/.
MAX_README_LINES = 300
DOC_FILES = ('get_started.md', 'model_zoo.md', 'benchmarks.md',
             'safety_and_resume.md', 'architecture.md', 'deployment.md',
             'compatibility.md', 'tests.md', 'hybrids.md', 'transforms.md')

_FENCE = re.compile(r'^(```|~~~)')
# [text](target) or [text](target "title"); text may hold `code` and \_
_LINK = re.compile(r'\[(?:[^\[\]]|\\\[|\\\])*\]\(\s*<?([^)\s>]+)>?'
                   r'(?:\s+"[^"]*")?\s*\)')
_HEADING = re.compile(r'^(#{1,6})\s+(.*?)\s*#*\s*$')


def _markdown_files() -> List[Path]:
    files = [
        README, REPO_ROOT / 'CHANGELOG.md',
        REPO_ROOT / 'configs' / 'recognition' / 'rsanet' / 'README.md'
    ]
    return files + sorted(DOCS.glob('*.md'))


def _prose_lines(path: Path) -> Iterator[Tuple[int, str]]:
    """Numbered lines of ``path`` outside fenced code blocks."""
    fenced = False
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if _FENCE.match(line.lstrip()):
            fenced = not fenced
            continue
        if not fenced:
            yield number, line


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, markup and punctuation
    dropped (``-`` and ``_`` kept), spaces to hyphens."""
    text = re.sub(r'\[([^\]]*)\]\([^)]*\)', r'\1', heading)  # links
    text = text.replace('`', '').replace('\\', '').strip().lower()
    text = re.sub(r'[^\w\- ]', '', text)
    return text.replace(' ', '-')


def _anchors(path: Path) -> set:
    anchors, seen = set(), {}
    for _, line in _prose_lines(path):
        match = _HEADING.match(line)
        if not match:
            continue
        slug = _slug(match.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f'{slug}-{count}')
    return anchors


def _relative_links(path: Path) -> Iterator[Tuple[int, str]]:
    for number, line in _prose_lines(path):
        for target in _LINK.findall(line):
            if re.match(r'^[a-z][a-z0-9+.-]*:', target, re.I):
                continue  # http:, https:, mailto:, ...
            yield number, target


def _ci_test_command() -> str:
    """The last command line of .ci/run (comments and blanks skipped)."""
    lines = [
        line.strip()
        for line in (REPO_ROOT / '.ci' / 'run').read_text().splitlines()
        if line.strip() and not line.strip().startswith('#')
    ]
    return lines[-1]


def test_readme_is_short():
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_README_LINES, (
        f'README.md has {len(lines)} lines (at most {MAX_README_LINES}): '
        f'move detail into docs/')


def test_readme_has_the_ci_test_command():
    command = _ci_test_command()
    assert command == 'bash tools/run.sh test'
    readme_lines = [line.strip() for line in README.read_text().splitlines()]
    assert command in readme_lines, \
        f'README.md must show `{command}` on a line of its own'
    assert 'bash tools/run.sh demo' in readme_lines


def test_readme_links_every_doc():
    text = README.read_text()
    for name in DOC_FILES:
        assert (DOCS / name).is_file(), name
        assert f'](docs/{name}' in text, f'README.md does not link docs/{name}'
    assert '](CHANGELOG.md)' in text and '](LICENSE)' in text


@pytest.mark.parametrize(
    'path', _markdown_files(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_relative_links_resolve(path):
    broken = []
    for number, target in _relative_links(path):
        file_part, _, anchor = target.partition('#')
        dest = (path.parent / file_part).resolve() if file_part else path
        where = f'{path.relative_to(REPO_ROOT)}:{number}: {target}'
        if not dest.exists():
            broken.append(f'{where} (no such file)')
        elif anchor and dest.suffix == '.md' and anchor not in _anchors(dest):
            broken.append(f'{where} (no heading with that anchor)')
    assert not broken, '\n'.join(broken)


def test_docs_carry_no_commit_pins_or_history():
    """Figures carry the command that reproduces them, not a commit; what
    earlier versions did belongs in CHANGELOG.md."""
    pin = re.compile(r'(at|earlier) commit|commit [0-9a-f]{7,40}\b', re.I)
    for path in [README] + sorted(DOCS.glob('*.md')):
        for number, line in _prose_lines(path):
            assert not pin.search(line), \
                f'{path.relative_to(REPO_ROOT)}:{number}: {line}'


def _compat_fixes() -> List[str]:
    """The ``patch_*`` functions that ``apply_compat_fixes`` calls, read
    from the source (importing mmrsa would apply them)."""
    tree = ast.parse((REPO_ROOT / 'mmrsa' / 'utils' / 'compat.py').read_text())
    apply = next(
        node for node in tree.body if isinstance(node, ast.FunctionDef)
        and node.name == 'apply_compat_fixes')
    return sorted({
        node.func.id
        for node in ast.walk(apply)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        and node.func.id.startswith('patch_')
    })


def test_compatibility_doc_lists_exactly_the_applied_fixes():
    fixes = _compat_fixes()
    assert fixes, 'apply_compat_fixes calls no patch_* function'
    documented = set(
        re.findall(r'`(patch_\w+)`', (DOCS / 'compatibility.md').read_text()))
    assert documented == set(fixes)


def test_license_is_apache_2():
    text = (REPO_ROOT / 'LICENSE').read_text()
    for needed in ('Apache License', 'Version 2.0, January 2004',
                   'http://www.apache.org/licenses/',
                   'TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND '
                   'DISTRIBUTION', 'END OF TERMS AND CONDITIONS',
                   'APPENDIX: How to apply the Apache License to your work.',
                   'Copyright (c) mmrsa contributors.'):
        assert needed in text, needed
    # the 9 sections of the terms
    for number, title in enumerate(
        ('Definitions', 'Grant of Copyright License',
         'Grant of Patent License', 'Redistribution',
         'Submission of Contributions', 'Trademarks', 'Disclaimer of Warranty',
         'Limitation of Liability',
         'Accepting Warranty or Additional Liability'), 1):
        assert f'{number}. {title}.' in text, title
    setup = (REPO_ROOT / 'setup.py').read_text()
    assert re.search(r"license='Apache License 2.0'", setup)
    manifest = (REPO_ROOT / 'MANIFEST.in').read_text().split()
    assert 'LICENSE' in manifest and 'CHANGELOG.md' in manifest
