"""The packages import each other one way only, so the converter and Beam workers never load the trainer.

  d3d_core (record format, command-line plumbing) <- tfrecord_tools (the converter)
  d3d_core <- official_d3d (the trainer) <- its export and serving modules
  all of them <- examples (applications such as the motion demo, outside the library)

Imports are read from the source with `ast`, at any depth (lazy imports inside functions too), so the test imports
none of the modules it checks.
"""

import ast
import pathlib
from typing import Iterator, Set, Tuple

REPO = pathlib.Path(__file__).resolve().parent.parent
LIBRARY_PACKAGES = {'d3d_core', 'official_d3d', 'tfrecord_tools'}
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
  assert _importers('d3d_core', LIBRARY_PACKAGES - {'d3d_core'}) == set()


def test_converter_does_not_import_the_trainer():
  assert _importers('tfrecord_tools', {'official_d3d'}) == set()


def test_trainer_does_not_import_the_converter():
  assert _importers('official_d3d', {'tfrecord_tools'}) == set()


def test_training_does_not_import_export_or_serving():
  training_importers = {importer for importer in _importers('official_d3d', EXPORT_AND_SERVING)
                        if not _is_in(importer, EXPORT_AND_SERVING)}
  assert training_importers == set()


def test_examples_use_the_library_and_the_library_never_imports_them():
  assert _importers('examples', LIBRARY_PACKAGES)  # the check below would pass vacuously without examples
  for package in sorted(LIBRARY_PACKAGES):
    assert _importers(package, {'examples'}) == set(), package
