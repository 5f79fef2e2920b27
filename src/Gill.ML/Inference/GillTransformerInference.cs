using Gill.ML.Generation;
using Gill.ML.Modules;
using Gill.ML.Retrieval;
using Gill.ML.Stages;
using Gill.ML.Stages.Joint;
using Gill.ML.Stages.VisualFeatures;
using Microsoft.ML;

namespace Gill.ML.Inference;

/// <summary>Interleaved inference (<see cref="GillModel"/>) over a GILL model trained or loaded through ML.NET.</summary>
public static class GillTransformerInference
{
    /// <summary>
    /// A <see cref="GillModel"/> over a trained or loaded GILL stage: its language model, tokenizer, trained heads and
    /// decision classifier (if any). The model does not own them: dispose it before the transformer.
    /// </summary>
    /// <param name="gill">The GILL stage (e.g. the output of <c>mlContext.Gill().Trainers.Gill(...)</c>).</param>
    /// <param name="visualEncoder">Encoder of prompt images; null uses the stage's own encoder when it has one.</param>
    /// <param name="imageGenerator">Generator the mapper output conditions (null: no generated images).</param>
    /// <param name="gallery">Retrieval gallery (null: no retrieved images).</param>
    /// <param name="contextMemory">Memory of (caption, image) pairs for retrieval-augmented context (RA-CM3).</param>
    /// <param name="decisionClassifier">Retrieve-or-generate classifier; null uses the stage's one when it has one.</param>
    public static GillModel ToGillModel(this GillStageTransformerBase gill, IVisualEncoder? visualEncoder = null, IImageGenerator? imageGenerator = null,
        GillRetrievalIndex? gallery = null, GillContextMemory? contextMemory = null, GillDecisionClassifier? decisionClassifier = null)
    {
        ArgumentNullException.ThrowIfNull(gill);
        visualEncoder ??= (gill as GillTransformer)?.VisualEncoder;
        return new GillModel(gill.Parts.Core, gill.Backbone.Tokenizer, visualEncoder, imageGenerator, decisionClassifier ?? gill.Parts.Decision,
            gallery, contextMemory, ownsComponents: false);
    }

    /// <summary>
    /// A <see cref="GillModel"/> over an ML.NET model (a chain as fitted, or as loaded with <c>mlContext.Gill().Model.Load</c>):
    /// its last GILL stage, with the visual encoder of that stage or of the chain's visual-feature stage. The model does not
    /// own the parts: dispose it before the ML.NET model.
    /// </summary>
    /// <exception cref="ArgumentException">The model has no GILL stage.</exception>
    public static GillModel ToGillModel(this ITransformer model, IVisualEncoder? visualEncoder = null, IImageGenerator? imageGenerator = null,
        GillRetrievalIndex? gallery = null, GillContextMemory? contextMemory = null, GillDecisionClassifier? decisionClassifier = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        var stages = Flatten(model).ToList();
        var gill = stages.OfType<GillStageTransformerBase>().LastOrDefault()
            ?? throw new ArgumentException($"The model ({string.Join(" → ", stages.Select(s => s.GetType().Name))}) has no GILL stage; " +
                                           "train one with mlContext.Gill().Trainers.Gill(...) or the stage trainers.", nameof(model));
        visualEncoder ??= (gill as GillTransformer)?.VisualEncoder ?? stages.OfType<VisualFeatureExtractionTransformer>().LastOrDefault()?.Encoder;
        return gill.ToGillModel(visualEncoder, imageGenerator, gallery, contextMemory, decisionClassifier);
    }

    private static IEnumerable<ITransformer> Flatten(ITransformer t)
    {
        if (t is IEnumerable<ITransformer> chain)
        {
            foreach (var c in chain)
                foreach (var x in Flatten(c))
                    yield return x;
        }
        else
        {
            yield return t;
        }
    }
}
