using Gill.ML.Persistence;
using Gill.ML.Stages.VisualFeatures;

namespace Gill.ML;

public sealed partial class GillCatalog
{
    /// <summary>Save and load of chains that contain Gill stages: <c>mlContext.Gill().Model.Save(...)</c>.</summary>
    public GillModelOperations Model => new(Context);

    /// <summary>
    /// Extracts visual features from an image column with a frozen encoder (nothing is trained).
    /// </summary>
    /// <param name="outputColumnName">Feature column, <c>Vector&lt;Single, D&gt;</c>.</param>
    /// <param name="inputColumnName">Image column: <c>MLImage</c> or image path text.</param>
    /// <param name="encoder">The encoder (e.g. <see cref="OnnxVisualEncoder.ResNet18"/>); the caller keeps ownership.</param>
    /// <param name="batchSize">Images per encoder call.</param>
    public VisualFeatureExtractionEstimator ExtractVisualFeatures(string outputColumnName, string inputColumnName, IVisualEncoder encoder,
        int batchSize = VisualFeatureExtractionEstimator.Defaults.BatchSize) =>
        new(Context, new VisualFeatureExtractionEstimator.Options
        {
            OutputColumnName = outputColumnName,
            InputColumnName = inputColumnName,
            Encoder = encoder,
            BatchSize = batchSize,
        });

    /// <summary>Extracts visual features with the given options.</summary>
    public VisualFeatureExtractionEstimator ExtractVisualFeatures(VisualFeatureExtractionEstimator.Options options) => new(Context, options);
}
