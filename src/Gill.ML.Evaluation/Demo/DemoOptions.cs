using System.Text.Json.Serialization;
using Gill.ML.World.Pretraining;

namespace Gill.ML.Evaluation.Demo;

/// <summary>Options of <see cref="DemoRunner.Run"/>: the shapes world, GILL's training schedule and the size of the evaluation.</summary>
public sealed class DemoOptions
{
    /// <summary>Cache folder of the world and its pretrained backbones (null: the pretrainer's default folder).</summary>
    public string? CacheDirectory { get; set; }

    /// <summary>Folder receiving the model zip, the HTML report and the JSON figures.</summary>
    public string OutputDirectory { get; set; } = "gill-demo";

    /// <summary>Seed of the world, the pretraining and GILL's training.</summary>
    public int Seed { get; set; }

    /// <summary>Use <see cref="WorldPretrainOptions.Quick"/> for the backbones (ignored when <see cref="Pretraining"/> is set).</summary>
    public bool Quick { get; set; }

    /// <summary>Output folder of <c>gill eval paper</c> that the report links (null: a <c>gill-paper</c> folder beside <see cref="OutputDirectory"/>, when present).</summary>
    public string? PaperResultsDirectory { get; set; }

    /// <summary>Captioned training images of the world (null: the preset's; ignored when <see cref="Pretraining"/> is set).</summary>
    public int? WorldImages { get; set; }

    /// <summary>Rendered image size in pixels (null: the preset's, 32; ignored when <see cref="Pretraining"/> is set).</summary>
    public int? ImageSize { get; set; }

    /// <summary>Multiplier of every pretraining phase's steps (null: the preset's; ignored when <see cref="Pretraining"/> is set).</summary>
    public double? PretrainStepsScale { get; set; }

    /// <summary>Explicit pretraining options (their cache folder and seed are replaced by this object's when those are set).</summary>
    public WorldPretrainOptions? Pretraining { get; set; }

    /// <summary>Optimizer steps of GILL's joint training (300: about 100 s on one core).</summary>
    public int Steps { get; set; } = 300;

    /// <summary>Training rows per step.</summary>
    public int BatchSize { get; set; } = 16;

    /// <summary>
    /// Epochs of mapper-only distillation over the training captions' cached [IMG] states after the joint steps (0: joint
    /// training only, as GILL's recipe). The mapper needs far more steps than the other heads; these steps skip the LM.
    /// </summary>
    public int MapperDistillationEpochs { get; set; } = 12;

    /// <summary>
    /// When positive, the demo also compares the two visual feature stages on retrieval: two more GILL models, one on
    /// the world image tower's features and one on the real ImageNet ResNet-18 (ONNX) features, each trained for this
    /// many joint steps on the same captions (no distillation), scored by text→image Recall@1/@5 on the test captions.
    /// Off by default: ResNet-18 reads 224-pixel inputs, about 10 images per second on two CPU cores, so 100 steps of 16
    /// captions add roughly 4 minutes.
    /// </summary>
    public int CompareResNet18Steps { get; set; }

    /// <summary>Peak learning rate of GILL's training.</summary>
    public double LearningRate { get; set; } = 2e-3;

    /// <summary>Test images of the retrieval gallery and of the attribute evaluation (chance Recall@1 is 1/N).</summary>
    public int EvaluationImages { get; set; } = 100;

    /// <summary>Test stories scored for the story figure (all test stories when fewer).</summary>
    public int EvaluationStories { get; set; } = 40;

    /// <summary>Stories and dialogues shown with their outputs in the report.</summary>
    public int Samples { get; set; } = 3;

    /// <summary>[IMG] tokens r of the trained model.</summary>
    public int ImageTokens { get; set; } = 4;

    /// <summary>Visual tokens k per input image.</summary>
    public int VisualTokens { get; set; } = 2;

    /// <summary>CPU threads torch uses during the run (restored afterwards); 0 keeps the current setting.</summary>
    public int Threads { get; set; } = 1;

    /// <summary>Trains the world language model in another process beside the other backbones when it is not cached
    /// (<see cref="WorldPretrainOptions.LanguageModelHost"/>; null: in this process). Not serialised.</summary>
    [JsonIgnore]
    public WorldLanguageModelHost? LanguageModelHost { get; set; }

    /// <summary>Checks the options.</summary>
    /// <exception cref="ArgumentException">An option is out of range; the message names it.</exception>
    public void Validate()
    {
        if (string.IsNullOrWhiteSpace(OutputDirectory)) throw new ArgumentException("OutputDirectory must name a folder.", nameof(OutputDirectory));
        if (Steps < 1) throw new ArgumentOutOfRangeException(nameof(Steps), Steps, "Steps must be at least 1.");
        if (BatchSize < 2) throw new ArgumentOutOfRangeException(nameof(BatchSize), BatchSize, "BatchSize must be at least 2 (the contrastive loss needs negatives).");
        if (!(LearningRate > 0)) throw new ArgumentOutOfRangeException(nameof(LearningRate), LearningRate, "LearningRate must be positive.");
        if (EvaluationImages < 5) throw new ArgumentOutOfRangeException(nameof(EvaluationImages), EvaluationImages, "EvaluationImages must be at least 5 (Recall@5 is reported).");
        if (EvaluationStories < 1) throw new ArgumentOutOfRangeException(nameof(EvaluationStories), EvaluationStories, "EvaluationStories must be at least 1.");
        if (Samples < 0) throw new ArgumentOutOfRangeException(nameof(Samples), Samples, "Samples must not be negative.");
        if (ImageTokens < 1) throw new ArgumentOutOfRangeException(nameof(ImageTokens), ImageTokens, "ImageTokens must be at least 1.");
        if (VisualTokens < 1) throw new ArgumentOutOfRangeException(nameof(VisualTokens), VisualTokens, "VisualTokens must be at least 1.");
        if (WorldImages is < 1) throw new ArgumentOutOfRangeException(nameof(WorldImages), WorldImages, "WorldImages must be at least 1.");
        if (PretrainStepsScale is double scale && !(scale > 0)) throw new ArgumentOutOfRangeException(nameof(PretrainStepsScale), scale, "PretrainStepsScale must be positive.");
        if (CompareResNet18Steps < 0) throw new ArgumentOutOfRangeException(nameof(CompareResNet18Steps), CompareResNet18Steps, "CompareResNet18Steps must not be negative.");
        if (MapperDistillationEpochs < 0) throw new ArgumentOutOfRangeException(nameof(MapperDistillationEpochs), MapperDistillationEpochs, "MapperDistillationEpochs must not be negative.");
        if (Threads < 0) throw new ArgumentOutOfRangeException(nameof(Threads), Threads, "Threads must not be negative.");
    }
}

/// <summary>Progress of <see cref="DemoRunner.Run"/>: phase, step within it and, while training, the loss. The
/// backbones' pretraining reports under "pretraining:&lt;phase&gt;" (<see cref="DemoRunner.PretrainingPrefix"/>), with
/// its log lines ("cached …", "done in …") as <see cref="Message"/>.</summary>
public readonly record struct DemoProgress(string Phase, int Step, int Total, double? Loss = null, string? Message = null);

/// <summary>A figure and its baseline, measured in the same run.</summary>
public sealed record DemoFigure(
    [property: JsonPropertyName("name")] string Name,
    [property: JsonPropertyName("value")] double Value,
    [property: JsonPropertyName("baseline_name")] string BaselineName,
    [property: JsonPropertyName("baseline")] double Baseline,
    [property: JsonPropertyName("n")] int N,
    [property: JsonPropertyName("description")] string Description);

/// <summary>Everything the demo measured (written as JSON next to the report).</summary>
public sealed class DemoFigures
{
    /// <summary>GILL text→image Recall@1 on test captions vs chance 1/N.</summary>
    [JsonPropertyName("retrieval_recall_at_1")] public required DemoFigure RetrievalRecallAt1 { get; init; }
    /// <summary>GILL text→image Recall@5 vs chance 5/N.</summary>
    [JsonPropertyName("retrieval_recall_at_5")] public required DemoFigure RetrievalRecallAt5 { get; init; }
    /// <summary>Colour accuracy of GILL-generated images vs the generator fed the caption.</summary>
    [JsonPropertyName("generation_color_accuracy")] public required DemoFigure GenerationColorAccuracy { get; init; }
    /// <summary>Shape accuracy of GILL-generated images vs the generator fed the caption.</summary>
    [JsonPropertyName("generation_shape_accuracy")] public required DemoFigure GenerationShapeAccuracy { get; init; }
    /// <summary>Colour-and-shape accuracy of GILL-generated images vs the generator fed the caption.</summary>
    [JsonPropertyName("generation_color_and_shape_accuracy")] public required DemoFigure GenerationColorAndShapeAccuracy { get; init; }
    /// <summary>Story figure: image-tower cosine of the image generated from the full story vs from the last caption only.</summary>
    [JsonPropertyName("story_similarity")] public required DemoFigure StorySimilarity { get; init; }
    /// <summary>Training loss of the first and last logged steps.</summary>
    [JsonPropertyName("loss")] public required DemoFigure Loss { get; init; }
    /// <summary>With <see cref="DemoOptions.CompareResNet18Steps"/>: Recall@1 and @5 of GILL on ResNet-18 ImageNet features
    /// (value) against GILL on the world image tower (baseline), same schedule; empty otherwise.</summary>
    [JsonPropertyName("visual_encoders")] public IReadOnlyList<DemoFigure> VisualEncoders { get; init; } = [];
    /// <summary>Loss per optimizer step.</summary>
    [JsonPropertyName("loss_curve")] public required IReadOnlyList<double> LossCurve { get; init; }
    /// <summary>Each loss term per optimizer step (captioning, retrieval_text, generation_text, contrastive, generation), unweighted.</summary>
    [JsonPropertyName("loss_components")] public IReadOnlyDictionary<string, IReadOnlyList<double>> LossComponents { get; init; } = new Dictionary<string, IReadOnlyList<double>>();
    /// <summary>Generation loss per step of the mapper distillation that follows the joint steps (empty when it is off).</summary>
    [JsonPropertyName("mapper_distillation_curve")] public IReadOnlyList<double> MapperDistillationCurve { get; init; } = [];
    /// <summary>Wall time of each phase in seconds.</summary>
    [JsonPropertyName("seconds")] public required IReadOnlyDictionary<string, double> Seconds { get; init; }
    /// <summary>Backbone phases taken from the cache (false: trained in this run).</summary>
    [JsonPropertyName("pretraining_cached")] public required bool PretrainingCached { get; init; }
    /// <summary>Wall seconds of each pretraining phase in this run (a cached phase: its verification).</summary>
    [JsonPropertyName("pretraining_seconds")] public IReadOnlyDictionary<string, double> PretrainingSeconds { get; init; } = new Dictionary<string, double>();
    /// <summary>Torch CPU threads and machine load at the start.</summary>
    [JsonPropertyName("machine")] public required IReadOnlyDictionary<string, string> Machine { get; init; }

    /// <summary>All figures with a baseline, in report order.</summary>
    [JsonIgnore]
    public IReadOnlyList<DemoFigure> All => [RetrievalRecallAt1, RetrievalRecallAt5, GenerationColorAccuracy, GenerationShapeAccuracy, GenerationColorAndShapeAccuracy, StorySimilarity, .. VisualEncoders, Loss];
}

/// <summary>Outcome of <see cref="DemoRunner.Run"/>.</summary>
public sealed class DemoResult
{
    /// <summary>The self-contained HTML report.</summary>
    public required string ReportPath { get; init; }
    /// <summary>The JSON with every figure.</summary>
    public required string FiguresPath { get; init; }
    /// <summary>The saved ML.NET model zip.</summary>
    public required string ModelPath { get; init; }
    /// <summary>The pretrained world cache folder.</summary>
    public required string CacheDirectory { get; init; }
    /// <summary>The figures.</summary>
    public required DemoFigures Figures { get; init; }
}
