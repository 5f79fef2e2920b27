using System.Text.Json.Serialization;
using Gill.ML.Evaluation.Demo;

namespace Gill.ML.Evaluation.Paper;

/// <summary>
/// Options of <see cref="PaperExperiments.Run"/>. The training hyperparameters default to <see cref="DemoOptions"/>'s
/// defaults, so tuning the demo tunes the experiments.
/// </summary>
public sealed class PaperOptions
{
    /// <summary>Every experiment name, in run order.</summary>
    public static readonly IReadOnlyList<string> ExperimentNames =
        ["stories", "dialogue", "retrieval", "mapper", "img-tokens", "decision", "frozen-lm", "retrieved-context"];

    private static readonly DemoOptions Demo = new();

    /// <summary>
    /// Pretrained world cache folder (world, lm, clip-text, image-encoder, generator, classifier), as written by
    /// <c>gill world pretrain</c> / <c>gill demo</c>. It is only read, never written.
    /// </summary>
    public string CacheDirectory { get; set; } = "";

    /// <summary>Folder receiving the tables (md, json, png), index.md and results.json; scratch files go to its <c>work</c> subfolder.</summary>
    public string OutputDirectory { get; set; } = "gill-paper";

    /// <summary>Quick mode: 2 seeds, <see cref="QuickSteps"/> steps, smaller evaluation sets (meant for the quick backbones).</summary>
    public bool Quick { get; set; }

    /// <summary>Seeds 0..Seeds−1 (null: 5, or 2 in quick mode).</summary>
    public int? Seeds { get; set; }

    /// <summary>GILL training steps (null: <see cref="DefaultSteps"/>, or <see cref="QuickSteps"/> in quick mode).</summary>
    public int? Steps { get; set; }

    /// <summary>
    /// Joint steps of every training when <see cref="Steps"/> is not set (100: the published tables' setting, which keeps
    /// the 5-seed run within 30 minutes). The experiments follow GILL's joint-only recipe: no mapper distillation.
    /// </summary>
    public const int DefaultSteps = 100;

    /// <summary>Steps in quick mode when <see cref="Steps"/> is not set.</summary>
    public int QuickSteps { get; set; } = 25;

    /// <summary>Experiments to run (null or empty: all of <see cref="ExperimentNames"/>).</summary>
    public IReadOnlyList<string>? Only { get; set; }

    /// <summary>Training rows per step.</summary>
    public int BatchSize { get; set; } = Demo.BatchSize;

    /// <summary>Peak learning rate.</summary>
    public double LearningRate { get; set; } = Demo.LearningRate;

    /// <summary>[IMG] tokens r of the base model.</summary>
    public int ImageTokens { get; set; } = Demo.ImageTokens;

    /// <summary>Visual tokens k per input image.</summary>
    public int VisualTokens { get; set; } = Demo.VisualTokens;

    /// <summary>Torch CPU threads per training (restored afterwards); 0 keeps the current setting.</summary>
    public int Threads { get; set; } = Demo.Threads;

    /// <summary>Train the ablation variants on a second thread while the base model trains and is evaluated (each thread uses <see cref="Threads"/> torch threads).</summary>
    public bool ParallelTraining { get; set; } = true;

    /// <summary>Peak learning rate of the LM's own parameters in the fine-tuned-LM variant of <c>frozen-lm</c>.</summary>
    public double LanguageModelLearningRate { get; set; } = 1e-4;

    /// <summary>Test stories scored (null: 100, quick 24).</summary>
    public int? EvaluationStories { get; set; }

    /// <summary>Test dialogues scored per round count (null: 40, quick 12).</summary>
    public int? EvaluationDialogues { get; set; }

    /// <summary>Test captions/images of the caption-level evaluation and its retrieval gallery (null: 100, quick 50).</summary>
    public int? EvaluationImages { get; set; }

    /// <summary>Training (caption, image) pairs in the retrieved-context memory (null: 2000, quick 300).</summary>
    public int? MemoryPairs { get; set; }

    /// <summary>Gallery images for the decision experiment's max-cosine heuristic: the first single-object images of the world's decision gallery split (null: all of them).</summary>
    public int? DecisionGalleryImages { get; set; }

    [JsonIgnore] internal int SeedCount => Seeds ?? (Quick ? 2 : 5);
    [JsonIgnore] internal int TrainSteps => Steps ?? (Quick ? QuickSteps : DefaultSteps);
    [JsonIgnore] internal int Stories => EvaluationStories ?? (Quick ? 24 : 100);
    [JsonIgnore] internal int DialogueCount => EvaluationDialogues ?? (Quick ? 12 : 40);
    [JsonIgnore] internal int Images => EvaluationImages ?? (Quick ? 50 : 100);
    [JsonIgnore] internal int Memory => MemoryPairs ?? (Quick ? 300 : 2000);

    /// <summary>The experiments that will run, in run order.</summary>
    public IReadOnlyList<string> SelectedExperiments() =>
        Only is { Count: > 0 } only ? ExperimentNames.Where(only.Contains).ToList() : ExperimentNames;

    /// <summary>Checks the options.</summary>
    /// <exception cref="ArgumentException">An option is out of range or an experiment name is unknown; the message names it.</exception>
    public void Validate()
    {
        if (string.IsNullOrWhiteSpace(CacheDirectory)) throw new ArgumentException("CacheDirectory must name the pretrained world cache folder.", nameof(CacheDirectory));
        if (string.IsNullOrWhiteSpace(OutputDirectory)) throw new ArgumentException("OutputDirectory must name a folder.", nameof(OutputDirectory));
        if (Seeds is < 1) throw new ArgumentOutOfRangeException(nameof(Seeds), Seeds, "Seeds must be at least 1.");
        if (Steps is < 1) throw new ArgumentOutOfRangeException(nameof(Steps), Steps, "Steps must be at least 1.");
        if (QuickSteps < 1) throw new ArgumentOutOfRangeException(nameof(QuickSteps), QuickSteps, "QuickSteps must be at least 1.");
        if (BatchSize < 2) throw new ArgumentOutOfRangeException(nameof(BatchSize), BatchSize, "BatchSize must be at least 2 (the contrastive loss needs negatives).");
        if (!(LearningRate > 0)) throw new ArgumentOutOfRangeException(nameof(LearningRate), LearningRate, "LearningRate must be positive.");
        if (!(LanguageModelLearningRate > 0)) throw new ArgumentOutOfRangeException(nameof(LanguageModelLearningRate), LanguageModelLearningRate, "LanguageModelLearningRate must be positive.");
        if (ImageTokens < 1) throw new ArgumentOutOfRangeException(nameof(ImageTokens), ImageTokens, "ImageTokens must be at least 1.");
        if (VisualTokens < 1) throw new ArgumentOutOfRangeException(nameof(VisualTokens), VisualTokens, "VisualTokens must be at least 1.");
        if (Threads < 0) throw new ArgumentOutOfRangeException(nameof(Threads), Threads, "Threads must not be negative.");
        if (EvaluationStories is < 1) throw new ArgumentOutOfRangeException(nameof(EvaluationStories), EvaluationStories, "EvaluationStories must be at least 1.");
        if (EvaluationDialogues is < 1) throw new ArgumentOutOfRangeException(nameof(EvaluationDialogues), EvaluationDialogues, "EvaluationDialogues must be at least 1.");
        if (EvaluationImages is < 10) throw new ArgumentOutOfRangeException(nameof(EvaluationImages), EvaluationImages, "EvaluationImages must be at least 10 (Recall@10 is reported).");
        if (MemoryPairs is < 2) throw new ArgumentOutOfRangeException(nameof(MemoryPairs), MemoryPairs, "MemoryPairs must be at least 2 (K = 2 examples are retrieved).");
        if (DecisionGalleryImages is < 1) throw new ArgumentOutOfRangeException(nameof(DecisionGalleryImages), DecisionGalleryImages, "DecisionGalleryImages must be at least 1.");
        if (Only is not null)
        {
            var unknown = Only.Where(n => !ExperimentNames.Contains(n)).ToList();
            if (unknown.Count > 0)
                throw new ArgumentException($"Unknown experiment name(s): {string.Join(", ", unknown)}. Known: {string.Join(", ", ExperimentNames)}.", nameof(Only));
        }
    }
}

/// <summary>Progress of <see cref="PaperExperiments.Run"/>: the phase (training a model, an experiment), its step and overall completion.</summary>
/// <param name="Phase">What runs now, e.g. "seed 2: training base" or "seed 2: stories".</param>
/// <param name="Step">Step within the phase.</param>
/// <param name="Total">Steps of the phase.</param>
/// <param name="Done">Units of work done in the whole run.</param>
/// <param name="TotalWork">Units of work of the whole run.</param>
/// <param name="Loss">Training loss, while training.</param>
public readonly record struct PaperProgress(string Phase, int Step, int Total, double Done, double TotalWork, double? Loss = null);

/// <summary>Outcome of <see cref="PaperExperiments.Run"/>.</summary>
public sealed class PaperResult
{
    /// <summary>The tables, in run order.</summary>
    public required IReadOnlyList<PaperTable> Tables { get; init; }

    /// <summary>index.md (every table plus run facts).</summary>
    public required string IndexPath { get; init; }

    /// <summary>results.json (every table plus run facts).</summary>
    public required string ResultsPath { get; init; }

    /// <summary>Wall time of the whole run.</summary>
    public required double TotalSeconds { get; init; }

    /// <summary>Every file written (tables' md/json/png, index.md, results.json).</summary>
    public required IReadOnlyList<string> Files { get; init; }
}
