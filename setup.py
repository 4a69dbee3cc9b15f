"""ament_python package cups_ros; also installs with pip on a machine without ROS."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "cups_ros"

# Versions tested together (CPU torch wheel here, the CUDA build of the same version on GPUs).
# No torchvision and no detectron2: see README ("Why no torchvision / detectron2").
INSTALL_REQUIRES = [
    "torch==2.13.0",
    "numpy==2.4.6",
    "scipy==1.17.1",
    "opencv-python-headless==5.0.0.93",
    "onnx==1.23.2",
    "onnxscript==0.7.2",
    "onnxruntime==1.32.0",
    "rosbags==0.11.9",
    "lightning==2.6.6",
    "PyYAML==6.0.3",
    "tqdm==4.70.1",
    "scikit-image==0.26.0",
    "matplotlib==3.11.2",
]

EXTRAS_REQUIRE = {
    # Independent reference implementations the tests compare against, and the tools CI runs.
    "test": [
        "pytest==9.2.0",
        "cityscapesscripts==2.3.0",
        "trackeval==1.3.0",
        "ruff==0.17.6",
    ],
}

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["tests", "tests.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
    ],
    package_data={PACKAGE: ["config/*.yaml", "data/*.pt"]},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    python_requires=">=3.10",
    zip_safe=True,
    maintainer="cups_ros developers",
    maintainer_email="cups-ros@example.org",
    description="Unsupervised panoptic segmentation with tracking from stereo video (CUPS) for ROS 2",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "cups-ros = cups_ros.cli:main",
            "perception_node = cups_ros.ros.perception_node:main",
            "pseudo_label_node = cups_ros.ros.pseudo_label_node:main",
            "self_training_node = cups_ros.ros.self_training_node:main",
        ],
    },
)
