"""Packaging for nni-covid3d.

The repository's top-level ``search_spaces/`` and ``strategies/`` folders install under the
``nni_covid3d`` namespace (``package_dir``), so no bare ``strategies`` package reaches
site-packages; editable installs resolve the same way.
"""
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).parent
VERSION = {}
exec((HERE / "nni_covid3d" / "_version.py").read_text(), VERSION)

# torch / torchvision are pinned to the releases this project is tested with; install them first
# (the Makefile does) so that no other requirement pulls a newer torch.
INSTALL_REQUIRES = [
    "torch==2.14.1",
    "torchvision==0.29.1",
    "nni==3.0",
    "pytorch-lightning>=2.0,<2.7",
    "torchmetrics>=1.0",
    "monai>=1.4",
    "nibabel>=5.0",
    "tensorboard>=2.14",
    "setuptools<81",  # nnictl imports pkg_resources
    "numpy",
    "scipy",
    "pillow",  # PNG / JPG slices (CC-CCII)
    "tifffile",  # 16-bit TIFF slices (COVID-CTset)
    "pydicom>=2.4",  # DICOM series for prediction
    "scikit-learn",
    "pandas",
    "openpyxl",  # MosMedData's dataset_registry.xlsx
    "matplotlib",
    "tqdm",
    "pyyaml",
]

setup(
    name="nni-covid3d",
    version=VERSION["__version__"],
    description="Neural architecture search for 3D CNNs detecting COVID-19 in chest CT, as an NNI plugin",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=[
        "nni_covid3d",
        "nni_covid3d.cli",
        "nni_covid3d.explain",
        "nni_covid3d.models",
        "nni_covid3d.training",
        "nni_covid3d.data",
        "nni_covid3d.nnictl",
        "nni_covid3d.strategies",
        "nni_covid3d.strategies.gumbel_dnas",
        "nni_covid3d.search_spaces",
    ],
    package_dir={
        "nni_covid3d": "nni_covid3d",
        "nni_covid3d.strategies": "strategies",
        "nni_covid3d.search_spaces": "search_spaces",
    },
    package_data={"nni_covid3d.search_spaces": ["*.json"], "nni_covid3d": ["reference/*.csv"]},
    include_package_data=True,
    install_requires=INSTALL_REQUIRES,
    extras_require={"test": ["pytest>=7", "pytest-timeout", "requests"]},
    entry_points={"console_scripts": ["nni-covid3d = nni_covid3d.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
        "Topic :: Scientific/Engineering :: Medical Science Apps.",
    ],
)
