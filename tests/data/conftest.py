"""Fixtures of the data tests."""
import pytest

from mrcnn_plugin.data import DatasetCatalog, MetadataCatalog


@pytest.fixture
def fresh_name(request):
    """A dataset name unique to the test, removed from both catalogs afterwards."""
    name = f"_test_{request.node.name}"
    yield name
    if name in DatasetCatalog:
        DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)
