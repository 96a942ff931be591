def pytest_collection_modifyitems(items):
    """The tests marked slow first: the workers then finish together instead of one waiting on a late long test."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
