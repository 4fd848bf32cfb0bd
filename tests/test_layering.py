"""The packages import each other one way only, so the converter and Beam workers never load the trainer.

  d3d_core (record format, command-line plumbing) <- tfrecord_tools (the converter)
  d3d_core <- official_d3d (the trainer) <- its export and serving modules

Imports are read from the source with `ast`, at any depth (lazy imports inside functions too), so the test imports
none of the modules it checks.
"""

import ast
import pathlib
from typing import Iterator, Set, Tuple

REPO = pathlib.Path(__file__).resolve().parent.parent
PROJECT_PACKAGES = {'d3d_core', 'official_d3d', 'tfrecord_tools'}
EXPORT_AND_SERVING = ('official_d3d.export_saved_model', 'official_d3d.serving')


def _imports(package: str) -> Iterator[Tuple[str, str]]:
  """(importing module, imported module or name), absolute names, for every import in `package`'s source."""
  paths = sorted((REPO / package).rglob('*.py'))
  assert paths, f'no source found under {REPO / package}'
  for path in paths:
    importer = '.'.join(path.relative_to(REPO).with_suffix('').parts)
    for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'), filename=str(path))):
      if isinstance(node, ast.Import):
        yield from ((importer, alias.name) for alias in node.names)
      elif isinstance(node, ast.ImportFrom):
        assert node.level == 0, f'{path}: relative import (the project imports by absolute name)'
        yield from ((importer, f'{node.module}.{alias.name}') for alias in node.names)


def _is_in(module: str, packages) -> bool:
  return any(module == package or module.startswith(package + '.') for package in packages)


def _importers(package: str, imported_packages) -> Set[str]:
  """The modules of `package` that import something from `imported_packages`."""
  return {importer for importer, module in _imports(package) if _is_in(module, imported_packages)}


def test_core_imports_no_project_package():
  assert _importers('d3d_core', PROJECT_PACKAGES - {'d3d_core'}) == set()


def test_converter_does_not_import_the_trainer():
  assert _importers('tfrecord_tools', {'official_d3d'}) == set()


def test_trainer_imports_the_converter_only_in_the_demo():
  # The demo runs the converter end to end; it moves to examples/ under issue 16, item 2, and this exception with it.
  assert _importers('official_d3d', {'tfrecord_tools'}) - {'official_d3d.demo'} == set()


def test_training_does_not_import_export_or_serving():
  training_importers = {importer for importer in _importers('official_d3d', EXPORT_AND_SERVING)
                        if not _is_in(importer, EXPORT_AND_SERVING)}
  # The demo exports and serves what it trained; it leaves the package with the exception above.
  assert training_importers - {'official_d3d.demo'} == set()
