import os

# every test and the scripts it starts run on the CPU, also on a machine with a GPU; the tests of the CUDA
# paths mock CUDA (tests/test_devices.py)
os.environ["CUDA_VISIBLE_DEVICES"] = ""


def pytest_collection_modifyitems(items):
    """The tests marked slow first: the workers then finish together instead of one waiting on a late long
    test."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
