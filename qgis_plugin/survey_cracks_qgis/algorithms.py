"""The provider's algorithms: parameters in, the product's command line (runner) out, its layers into the project.

Each algorithm runs the same `survey-cracks` command a user would type (runner builds it),
in the product's own Python, and reads what it wrote. The run happens in processAlgorithm
(a background thread in the desktop); layers are added in postProcessAlgorithm (the main
thread), to the algorithm's project, one group per raster.
"""

from __future__ import annotations

import os
from pathlib import Path

from qgis.core import (
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsRaster,
    QgsRasterLayer,
    QgsVectorLayer,
)
from qgis.PyQt.QtGui import QIcon

from . import runner

ICON = str(Path(__file__).with_name("icon.png"))
RUN_FOLDERS = {"RUN": "run output folder", "OLD": "earlier run's output folder", "NEW": "later run's output folder"}


def _int(value) -> int:
    """A QGIS enum value as an int (plain ints and sip enums alike)."""
    try:
        return int(value)
    except TypeError:
        return int(value.value)


def raster_facts(layer: QgsRasterLayer) -> runner.RasterFacts:
    provider = layer.dataProvider()
    path = layer.source().split("|")[0] if layer.providerType() == "gdal" else ""
    alpha = tuple(band for band in range(1, layer.bandCount() + 1)
                  if provider.colorInterpretation(band) == QgsRaster.AlphaBand)
    data_type = _int(provider.dataType(1))
    return runner.RasterFacts(layer.name(), path, layer.bandCount(), runner.QGIS_DATA_TYPES.get(data_type, f"type {data_type}"),
                              layer.crs().authid() if layer.crs().isValid() else "", alpha)


class SurveyCracksAlgorithm(QgsProcessingAlgorithm):
    """What the three share: running the product with progress and cancellation, loading layers afterwards."""

    NAME = DISPLAY = HELP = ""

    def __init__(self) -> None:
        super().__init__()
        self.groups: list[tuple[str, list[runner.LayerSpec]]] = []

    def name(self) -> str:
        return self.NAME

    def displayName(self) -> str:
        return self.DISPLAY

    def shortHelpString(self) -> str:
        return self.HELP

    def createInstance(self):
        return type(self)()

    def group(self) -> str:
        return ""

    def groupId(self) -> str:
        return ""

    def icon(self) -> QIcon:
        return QIcon(ICON)

    def close_layers_under(self, folder: str, context, feedback) -> None:
        """Remove the project's layers read from ``folder`` before the product rewrites their files (Windows
        cannot replace a file QGIS holds open); postProcessAlgorithm loads them again."""
        project = context.project()
        if project is None:
            return
        ids = [layer_id for layer_id, layer in project.mapLayers().items() if runner.source_under(layer.source(), folder)]
        if ids:
            feedback.pushInfo(f"closing {len(ids)} layers of {folder} while the product rewrites them")
            project.removeMapLayers(ids)

    def folder(self, parameters, key: str, context) -> str:
        """A run output folder parameter (RUN, OLD, NEW), refused when it is not a folder."""
        folder = self.parameterAsFile(parameters, key, context)
        problem = runner.check_folder(folder, RUN_FOLDERS[key])
        if problem:
            raise QgsProcessingException(problem)
        return folder

    def executable(self) -> str:
        from .provider import configured_runtime

        try:
            return configured_runtime().require_product()
        except runner.ProductMissing as missing:
            raise QgsProcessingException(str(missing)) from None

    def run_product(self, command: list[str], feedback) -> runner.Progress:
        """Run ``command``; its lines to the log, its progress to the task bar. Raises on a usage or machine error."""
        feedback.pushCommandInfo(" ".join(command))
        progress = runner.Progress()

        def on_line(text: str) -> None:
            percent = progress.line(text)
            if percent is not None:
                feedback.setProgress(percent)
            if runner.FAILED.match(text.strip()):
                feedback.reportError(text.strip())
            elif not runner.is_bar(text):
                feedback.pushInfo(text)

        code = runner.run_product(command, on_line, feedback.isCanceled, env=runner.product_env(os.environ))
        if code == runner.CANCELLED:
            feedback.reportError("cancelled: the product was stopped; finished rasters are complete in the output "
                                 "folder, and the one in progress stays in its hidden .<raster>.partial folder, "
                                 "which the next run resumes", False)
        elif code == 4:  # every raster done; an annotation could not be used (its WARNING line says which and why)
            feedback.reportError("an annotation could not be used: those rasters have maps but no metrics (see above)", False)
        elif code >= 2:  # usage (2), infrastructure (3), interrupted (130, 143): the product's own message says why
            raise QgsProcessingException("\n".join(progress.errors) or f"{command[1]} failed (exit code {code})")
        elif code == 1:
            feedback.reportError(f"{len(progress.errors)} problem(s), listed above; the other rasters are done", False)
        return progress

    def postProcessAlgorithm(self, context, feedback):
        project = context.project()
        if project is None or not self.groups:
            return {}
        root = project.layerTreeRoot()
        for name, specs in self.groups:
            old = root.findGroup(name)
            if old is not None:  # a rerun replaces the group and its layers
                project.removeMapLayers([node.layerId() for node in old.findLayers()])
                root.removeChildNode(old)
            group = root.insertGroup(0, name)
            for spec in specs:
                layer = (QgsRasterLayer(spec.uri, spec.name, spec.provider) if spec.provider == "gdal"
                         else QgsVectorLayer(spec.uri, spec.name, spec.provider))
                if not layer.isValid():
                    feedback.reportError(f"{spec.uri}: QGIS cannot open it", False)
                    continue
                if spec.style:
                    layer.loadNamedStyle(spec.style)
                project.addMapLayer(layer, False)
                group.addLayer(layer)
        return {}


class DetectCracksAlgorithm(SurveyCracksAlgorithm):
    INPUT, FOLDER, OUTPUT, MODEL, THRESHOLD, SCALE, MODE = "INPUT", "FOLDER", "OUTPUT", "MODEL", "THRESHOLD", "SCALE", "MODE"

    NAME = "detect_cracks"
    DISPLAY = "Detect cracks"
    HELP = ("Runs `survey-cracks run` on the raster layers (and/or a folder of surveys) and adds, per raster, its "
            "crack probability heatmap, crack polygons (length, width) and centrelines to the project, styled, "
            "in a group named survey / raster. Outputs go to OUTPUT/<survey>/<raster>/ (heatmap.tif, cracks.gpkg, "
            "report.json); running again into the same folder recomputes only what changed. Cancelling stops the "
            "product: finished rasters stay complete, none is left half-written.")

    def initAlgorithm(self, config=None):
        self.addParameter(QgsProcessingParameterMultipleLayers(self.INPUT, "Raster layers", QgsProcessing.TypeRaster,
                                                               optional=True))
        self.addParameter(QgsProcessingParameterFile(self.FOLDER, "Or a folder of rasters / surveys",
                                                     QgsProcessingParameterFile.Folder, optional=True))
        self.addParameter(QgsProcessingParameterFolderDestination(self.OUTPUT, "Output folder"))
        self.addParameter(QgsProcessingParameterFile(self.MODEL, "Model file (empty: the shipped model)",
                                                     extension="safetensors", optional=True))
        self.addParameter(_threshold(self.THRESHOLD, "the model's calibrated one"))
        self.addParameter(QgsProcessingParameterNumber(self.SCALE, "Processing scale (mask mode; 2: thin cracks "
                                                       "twice as wide for the model)", QgsProcessingParameterNumber.Double,
                                                       defaultValue=1.0, minValue=0.25, maxValue=4.0))
        self.addParameter(QgsProcessingParameterEnum(self.MODE, "Mode", list(runner.MODES), defaultValue=0))
        self.addOutput(QgsProcessingOutputNumber("RASTERS", "Rasters done or up to date"))
        self.addOutput(QgsProcessingOutputNumber("PROBLEMS", "Rasters or inputs that failed"))

    def _parameters(self, parameters, context) -> tuple[runner.DetectParameters, list[str], list[str]]:
        """The run's parameters, and the (errors, warnings) of checking them."""
        errors: list[str] = []
        warnings: list[str] = []
        inputs: list[str] = []
        for layer in self.parameterAsLayerList(parameters, self.INPUT, context):
            facts = raster_facts(layer)
            bad, notes = runner.check_raster(facts)
            errors += bad
            warnings += notes
            inputs.append(facts.path)
        folder = self.parameterAsFile(parameters, self.FOLDER, context)
        if folder:
            problem = runner.check_folder(folder, "input folder")
            errors += [problem] if problem else []
            inputs.append(folder)
        if not inputs:
            errors.append("no input: give raster layers or a folder")
        out = self.parameterAsString(parameters, self.OUTPUT, context)
        problem = runner.check_output(out)
        errors += [problem] if problem else []
        chosen = runner.DetectParameters(
            inputs=inputs, out=out, model=self.parameterAsFile(parameters, self.MODEL, context) or None,
            threshold=_optional_number(self, parameters, self.THRESHOLD, context),
            scale=self.parameterAsDouble(parameters, self.SCALE, context),
            mode=runner.MODES[self.parameterAsEnum(parameters, self.MODE, context)])
        if chosen.model and not Path(chosen.model).is_file():
            errors.append(f"{chosen.model}: model file not found — check the path, or leave it empty for the shipped model")
        return chosen, errors, warnings

    def checkParameterValues(self, parameters, context):
        ok, message = super().checkParameterValues(parameters, context)
        if not ok:
            return ok, message
        _, errors, _ = self._parameters(parameters, context)
        return (False, "\n".join(errors)) if errors else (True, "")

    def processAlgorithm(self, parameters, context, feedback):
        chosen, errors, warnings = self._parameters(parameters, context)
        if errors:
            raise QgsProcessingException("\n".join(errors))
        for warning in warnings:
            feedback.pushWarning(warning)
        progress = self.run_product(runner.detect_command(self.executable(), chosen), feedback)
        self.groups = runner.run_groups(chosen.out, progress.rasters)
        return {self.OUTPUT: chosen.out, "RASTERS": len(progress.rasters), "PROBLEMS": len(progress.errors)}


class EvaluateAlgorithm(SurveyCracksAlgorithm):
    NAME = "evaluate"
    DISPLAY = "Evaluate against annotations"
    HELP = ("Runs `survey-cracks evaluate RUN_FOLDER`: recomputes a run's polygons, centrelines, metrics and "
            "reports from its heatmaps and the annotations beside the source rasters (X.cracks.geojson|gpkg, "
            "X.mask.png|tif), optionally at another threshold, without the model. Reloads the run's layers.")

    def initAlgorithm(self, config=None):
        self.addParameter(_folder("RUN"))
        self.addParameter(_threshold("THRESHOLD", "the run's"))
        _assets_and_rules(self)
        self.addParameter(QgsProcessingParameterBoolean("LOAD", "Load the run's layers", defaultValue=True))

    def prepareAlgorithm(self, parameters, context, feedback):  # the main thread: the project may change here
        if self.parameterAsBool(parameters, "LOAD", context):
            self.close_layers_under(self.parameterAsFile(parameters, "RUN", context), context, feedback)
        return True

    def processAlgorithm(self, parameters, context, feedback):
        out = self.folder(parameters, "RUN", context)
        threshold = _optional_number(self, parameters, "THRESHOLD", context)
        self.run_product(runner.evaluate_command(self.executable(), out, threshold, *_files(self, parameters, context)),
                         feedback)
        if self.parameterAsBool(parameters, "LOAD", context):
            self.groups = runner.run_groups(out, runner.rasters_in(out))
        return {"RUN": out}


class CompareAlgorithm(SurveyCracksAlgorithm):
    NAME = "compare"
    DISPLAY = "Compare two dates"
    HELP = ("Runs `survey-cracks compare OLD NEW`: matches the two runs' cracks per survey and adds a 'changes' "
            "layer (new, grown, matched, gone) to each survey's GeoPackage in NEW, with changes.csv and "
            "asset_changes.csv; the changes layers are added to the project, styled.")

    def initAlgorithm(self, config=None):
        self.addParameter(_folder("OLD"))
        self.addParameter(_folder("NEW"))
        _assets_and_rules(self)

    def processAlgorithm(self, parameters, context, feedback):
        old, new = (self.folder(parameters, key, context) for key in ("OLD", "NEW"))
        self.run_product(runner.compare_command(self.executable(), old, new, *_files(self, parameters, context)), feedback)
        self.groups = runner.change_layers(new)
        return {"NEW": new}


def _assets_and_rules(algorithm: QgsProcessingAlgorithm) -> None:
    algorithm.addParameter(QgsProcessingParameterFile("ASSETS", "Asset polygons (empty: each survey's assets.gpkg/"
                                                      ".geojson, else raster footprints)", optional=True))
    algorithm.addParameter(QgsProcessingParameterFile("RULES", "Asset rules YAML (empty: the built-in rules)",
                                                      extension="yaml", optional=True))


def _files(algorithm: QgsProcessingAlgorithm, parameters, context) -> tuple[str | None, str | None]:
    return tuple(algorithm.parameterAsFile(parameters, key, context) or None for key in ("ASSETS", "RULES"))  # type: ignore[return-value]


def _folder(key: str) -> QgsProcessingParameterFile:
    return QgsProcessingParameterFile(key, RUN_FOLDERS[key].capitalize(), QgsProcessingParameterFile.Folder)


def _threshold(key: str, default: str) -> QgsProcessingParameterNumber:
    return QgsProcessingParameterNumber(key, f"Crack probability threshold (empty: {default})",
                                        QgsProcessingParameterNumber.Double, optional=True, minValue=0.0, maxValue=1.0)


def _optional_number(algorithm: QgsProcessingAlgorithm, parameters, key: str, context) -> float | None:
    """An optional number parameter: None when left empty (the product's default), else its value."""
    if parameters.get(key) in (None, ""):
        return None
    return algorithm.parameterAsDouble(parameters, key, context)
